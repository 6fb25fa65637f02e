using Kiln.Distributed.Mpi;
using Kiln.Distributed.Nccl;

namespace Kiln.Distributed;

/// <summary>Creates process groups.</summary>
public static class ProcessGroups
{
    /// <summary>
    /// Joins the MPI world this process was started in (by mpirun, or as a singleton of one rank without it):
    /// initialises MPI once per process and returns the group of all its ranks. Where the launcher set RANK and
    /// WORLD_SIZE, they must agree with MPI's own. Dispose the group to finalise MPI; MPI cannot be initialised again
    /// in the same process.
    /// </summary>
    /// <param name="options">Settings; <see cref="ProcessGroupOptions.Default"/> when null.</param>
    /// <returns>The world group.</returns>
    /// <exception cref="DistributedException">libmpi.so.40 is missing, MPI fails, or the launcher's environment disagrees with MPI.</exception>
    public static IProcessGroup InitializeMpi(ProcessGroupOptions? options = null) => MpiProcessGroup.Create(options ?? ProcessGroupOptions.Default);

    /// <summary>
    /// Creates the group of the named backend, as torch.distributed's <c>init_process_group(backend)</c> does:
    /// <c>"mpi"</c> (CPU tensors) or <c>"nccl"</c> (CUDA tensors, one GPU per rank, from torchrun's environment).
    /// </summary>
    /// <param name="backend"><c>"mpi"</c> or <c>"nccl"</c>.</param>
    /// <param name="options">Settings; <see cref="ProcessGroupOptions.Default"/> when null.</param>
    /// <returns>The world group.</returns>
    /// <exception cref="ArgumentException">An unknown backend.</exception>
    /// <exception cref="DistributedException">The backend's library is missing or it fails to start.</exception>
    public static IProcessGroup Initialize(string backend, ProcessGroupOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        return backend.ToLowerInvariant() switch
        {
            "mpi" => InitializeMpi(options),
            "nccl" => InitializeNccl(options),
            _ => throw new ArgumentException($"unknown process-group backend '{backend}'; Kiln has 'mpi' (CPU tensors) and 'nccl' (CUDA tensors)", nameof(backend)),
        };
    }

    /// <summary>
    /// Joins an NCCL communicator of WORLD_SIZE ranks, one GPU per rank (LOCAL_RANK picks the device), from torchrun's
    /// environment: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (rank 0 hands NCCL's unique id to the
    /// others over a TCP connection to MASTER_ADDR:MASTER_PORT).
    /// </summary>
    /// <param name="options">Settings; <see cref="ProcessGroupOptions.Default"/> when null.</param>
    /// <returns>The world group.</returns>
    /// <exception cref="DistributedException">libnccl.so.2 or CUDA is missing, the environment is incomplete, or NCCL fails.</exception>
    public static IProcessGroup InitializeNccl(ProcessGroupOptions? options = null) => NcclProcessGroup.Create(options ?? ProcessGroupOptions.Default);
}
