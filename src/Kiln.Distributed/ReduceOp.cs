namespace Kiln.Distributed;

/// <summary>How <see cref="IProcessGroup.AllReduce"/> and <see cref="IProcessGroup.ReduceScatter"/> combine ranks' values.</summary>
public enum ReduceOp
{
    /// <summary>Element-wise sum over ranks.</summary>
    Sum,

    /// <summary>Element-wise mean over ranks: a sum, then a division by the world size (floating-point tensors only).</summary>
    Average,

    /// <summary>Element-wise minimum over ranks.</summary>
    Min,

    /// <summary>Element-wise maximum over ranks.</summary>
    Max,

    /// <summary>Element-wise product over ranks.</summary>
    Product,
}
