using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Passes;

/// <summary>A rewrite of a model's main graph that keeps what the model computes.</summary>
internal interface IGraphPass
{
    /// <summary>The pass's name in reports and on the command line.</summary>
    public string Name { get; }

    /// <summary>Rewrites <paramref name="model"/> in place; returns how many nodes it changed, removed or added.</summary>
    public int Apply(ModelProto model);
}
