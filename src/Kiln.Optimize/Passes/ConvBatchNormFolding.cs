using Kiln.Optimize.Graph;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Passes;

/// <summary>
/// Conv(X, W[, B]) then inference BatchNormalization(scale, bias, mean, var) → Conv(X, W', B') with
/// W' = W · scale/√(var+ε) per output channel and B' = (B − mean) · scale/√(var+ε) + bias, when every one of those is a
/// float32 initializer and the Conv's output feeds only the BatchNormalization. W' and B' are new initializers; the old
/// ones stay only if something else reads them.
/// </summary>
internal sealed class ConvBatchNormFolding : IGraphPass
{
    public string Name => "conv-batchnorm-folding";

    public int Apply(ModelProto model)
    {
        GraphProto graph = model.Graph;
        int changes = 0;
        foreach (NodeProto conv in graph.Node.Where(n => n.OpType == "Conv" && IsDefaultDomain(n)).ToList())
        {
            var index = new GraphIndex(graph);
            if (conv.Input.Count < 2 || conv.Output.Count != 1 || index.GraphOutputs.Contains(conv.Output[0])
                || index.Consumers.GetValueOrDefault(conv.Output[0], []) is not [NodeProto bn] || !IsInferenceBatchNorm(bn, conv.Output[0]))
            {
                continue;
            }
            TensorProto? weightTensor = Initializers.FindConstant(model, conv.Input[1]);
            float[]? weight = weightTensor is null ? null : Initializers.ReadFloats(weightTensor);
            if (weightTensor is null || weight is null || weightTensor.Dims.Count < 3)
            {
                continue;
            }
            int channels = checked((int)weightTensor.Dims[0]);
            if (channels <= 0 || weight.Length % channels != 0)
            {
                continue;
            }
            float[]? convBias = conv.Input.Count > 2 && conv.Input[2].Length > 0 ? Channel(model, conv.Input[2], channels) : new float[channels];
            float[]? scale = Channel(model, bn.Input[1], channels);
            float[]? shift = Channel(model, bn.Input[2], channels);
            float[]? mean = Channel(model, bn.Input[3], channels);
            float[]? variance = Channel(model, bn.Input[4], channels);
            if (convBias is null || scale is null || shift is null || mean is null || variance is null)
            {
                continue;
            }
            double epsilon = bn.Attribute.FirstOrDefault(a => a.Name == "epsilon")?.F ?? 1e-5;
            int perChannel = weight.Length / channels;
            var foldedWeight = new float[weight.Length];
            var foldedBias = new float[channels];
            for (int c = 0; c < channels; c++)
            {
                double factor = scale[c] / Math.Sqrt(variance[c] + epsilon);
                for (int k = c * perChannel; k < (c + 1) * perChannel; k++)
                {
                    foldedWeight[k] = (float)(weight[k] * factor);
                }
                foldedBias[c] = (float)(((convBias[c] - mean[c]) * factor) + shift[c]);
            }
            string[] replaced = [.. conv.Input.Skip(1).Concat(bn.Input.Skip(1))];
            string weightName = Initializers.UniqueName(graph, conv.Input[1] + "_bn_folded");
            Initializers.Add(model, Initializers.FloatTensor(weightName, weightTensor.Dims, foldedWeight));
            string biasName = Initializers.UniqueName(graph, (conv.Input.Count > 2 && conv.Input[2].Length > 0 ? conv.Input[2] : conv.Input[1] + "_bias") + "_bn_folded");
            Initializers.Add(model, Initializers.FloatTensor(biasName, [channels], foldedBias));
            conv.Input[1] = weightName;
            if (conv.Input.Count > 2)
            {
                conv.Input[2] = biasName;
            }
            else
            {
                conv.Input.Add(biasName);
            }
            string folded = conv.Output[0];
            conv.Output[0] = bn.Output[0];
            graph.Node.Remove(bn);
            Initializers.ForgetValue(graph, folded);
            Initializers.RemoveUnread(graph, replaced);
            changes += 2;
        }
        return changes;
    }

    /// <summary>BatchNormalization reading <paramref name="input"/> in inference mode, writing only its first output.</summary>
    private static bool IsInferenceBatchNorm(NodeProto bn, string input) =>
        bn.OpType == "BatchNormalization" && IsDefaultDomain(bn)
        && bn.Input.Count == 5 && bn.Input[0] == input && bn.Input.Skip(1).All(i => i != input)
        && bn.Output.Count >= 1 && bn.Output[0].Length > 0 && bn.Output.Skip(1).All(o => o.Length == 0)
        && bn.Attribute.All(a => a.Name switch
        {
            "epsilon" or "momentum" => true,
            "training_mode" or "is_test" => a.I == (a.Name == "is_test" ? 1 : 0),
            "spatial" => a.I == 1,
            _ => false,
        });

    private static float[]? Channel(ModelProto model, string name, int channels) =>
        Initializers.FindConstant(model, name) is TensorProto t && t.Dims.Count == 1 && t.Dims[0] == channels ? Initializers.ReadFloats(t) : null;

    private static bool IsDefaultDomain(NodeProto node) => node.Domain is "" or "ai.onnx";
}
