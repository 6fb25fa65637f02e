namespace Kiln.Serve.Tests;

/// <summary>
/// Writes a tiny ONNX model by hand (protobuf wire format): Y[N,3] = MatMul(X[N,4], W[4,3]) + B[3], with a dynamic batch
/// dimension N, so batching can be checked against the same arithmetic done here.
/// </summary>
internal static class TinyOnnx
{
    public const int Inputs = 4;
    public const int Outputs = 3;

    public static float[] Weights(float scale) => [.. Enumerable.Range(0, Inputs * Outputs).Select(i => scale * (i - 5) / 7f)];

    public static float[] Bias(float scale) => [scale * 0.5f, -scale, 2f];

    public static float[] Expected(float[] x, float scale)
    {
        float[] w = Weights(scale), b = Bias(scale);
        int rows = x.Length / Inputs;
        float[] y = new float[rows * Outputs];
        for (int r = 0; r < rows; r++)
        {
            for (int o = 0; o < Outputs; o++)
            {
                float sum = 0;
                for (int i = 0; i < Inputs; i++)
                {
                    sum += x[(r * Inputs) + i] * w[(i * Outputs) + o];
                }
                y[(r * Outputs) + o] = sum + b[o];
            }
        }
        return y;
    }

    public static byte[] Linear(float scale) => OnnxWire.Model(
        "linear",
        [OnnxWire.Node("MatMul", ["X", "W"], ["XW"]), OnnxWire.Node("Add", ["XW", "B"], ["Y"])],
        [OnnxWire.FloatTensor("W", [Inputs, Outputs], Weights(scale)), OnnxWire.FloatTensor("B", [Outputs], Bias(scale))],
        [OnnxWire.ValueInfo("X", OnnxWire.Float, ["N", Inputs])],
        [OnnxWire.ValueInfo("Y", OnnxWire.Float, ["N", Outputs])]);
}
