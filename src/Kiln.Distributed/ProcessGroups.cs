using Kiln.Distributed.Mpi;

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
    /// <returns>The world group.</returns>
    /// <exception cref="DistributedException">libmpi.so.40 is missing, MPI fails, or the launcher's environment disagrees with MPI.</exception>
    public static IProcessGroup InitializeMpi() => MpiProcessGroup.Create();
}
