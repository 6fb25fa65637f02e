using System.Runtime.InteropServices;
using Kiln.Optimize.Onnx.Proto;

namespace Kiln.Optimize.Quantization;

/// <summary>The values of a float32 TensorProto, from raw_data (little-endian) or float_data.</summary>
internal static class FloatTensor
{
    public static float[] Read(TensorProto tensor)
    {
        if (tensor.DataType != (int)TensorProto.Types.DataType.Float)
        {
            throw new OptimizeException($"initializer '{tensor.Name}' is not float32");
        }
        if (!tensor.RawData.IsEmpty)
        {
            return MemoryMarshal.Cast<byte, float>(tensor.RawData.Span).ToArray();
        }
        return [.. tensor.FloatData];
    }
}
