using System.Globalization;
using System.Text.Json;
using Kiln.Serve.Inference;

namespace Kiln.Serve.Protocols;

/// <summary>
/// A parsed Open Inference Protocol infer request for a one-input FP32 model: the input tensor (JSON <c>data</c> or a
/// slice of the binary part), the request id and which outputs to return, as JSON or binary.
/// </summary>
internal sealed class InferRequest
{
    private InferRequest(FloatTensor input, string? id, List<(int Index, bool Binary)> outputs)
    {
        Input = input;
        Id = id;
        Outputs = outputs;
    }

    public FloatTensor Input { get; }

    public string? Id { get; }

    /// <summary>Outputs to return, as indices into the model's outputs, each flagged binary or JSON.</summary>
    public List<(int Index, bool Binary)> Outputs { get; }

    /// <summary>Parses a body; <paramref name="headerLength"/> is the <c>Inference-Header-Content-Length</c> value, empty for plain JSON.</summary>
    /// <exception cref="ServeException">400 for malformed requests and for inputs the model does not take.</exception>
    public static InferRequest Parse(byte[] body, string headerLength, ModelBackend model)
    {
        int jsonLength = body.Length;
        if (!string.IsNullOrEmpty(headerLength)
            && (!int.TryParse(headerLength, NumberStyles.None, CultureInfo.InvariantCulture, out jsonLength) || jsonLength > body.Length))
        {
            throw ServeException.BadRequest($"{OpenInferenceApi.HeaderLength} \"{headerLength}\" is not a length within the {body.Length}-byte body.");
        }
        ReadOnlySpan<byte> binary = body.AsSpan(jsonLength);
        try
        {
            using JsonDocument document = JsonDocument.Parse(body.AsMemory(0, jsonLength));
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("inputs", out JsonElement inputs) || inputs.ValueKind != JsonValueKind.Array)
            {
                throw ServeException.BadRequest("The request must be a JSON object with an \"inputs\" array.");
            }
            if (inputs.GetArrayLength() != 1)
            {
                throw ServeException.BadRequest($"The model takes one input, '{model.InputName}'; the request has {inputs.GetArrayLength()}.");
            }
            FloatTensor input = ParseInput(inputs[0], binary, model);
            string? id = root.TryGetProperty("id", out JsonElement idElement) && idElement.ValueKind == JsonValueKind.String ? idElement.GetString() : null;
            bool binaryDefault = root.TryGetProperty("parameters", out JsonElement parameters) && Flag(parameters, "binary_data_output");
            var outputs = new List<(int Index, bool Binary)>();
            if (root.TryGetProperty("outputs", out JsonElement requested) && requested.ValueKind == JsonValueKind.Array && requested.GetArrayLength() > 0)
            {
                foreach (JsonElement output in requested.EnumerateArray())
                {
                    string? name = output.ValueKind == JsonValueKind.Object && output.TryGetProperty("name", out JsonElement n) ? n.GetString() : null;
                    int index = name is null ? -1 : IndexOf(model.OutputNames, name);
                    if (index < 0)
                    {
                        throw ServeException.BadRequest($"Requested output '{name}' is not one of the model's outputs ({string.Join(", ", model.OutputNames)}).");
                    }
                    bool binaryOutput = output.TryGetProperty("parameters", out JsonElement p) && p.ValueKind == JsonValueKind.Object
                        && p.TryGetProperty("binary_data", out JsonElement b) ? b.ValueKind == JsonValueKind.True : binaryDefault;
                    outputs.Add((index, binaryOutput));
                }
            }
            else
            {
                for (int i = 0; i < model.OutputNames.Count; i++)
                {
                    outputs.Add((i, binaryDefault));
                }
            }
            return new InferRequest(input, id, outputs);
        }
        catch (JsonException ex)
        {
            throw new ServeException(400, "BadRequestException", $"The request's JSON is malformed: {ex.Message}", ex);
        }
        catch (InvalidOperationException ex)
        {
            throw new ServeException(400, "BadRequestException", $"The request's JSON has a member of the wrong type: {ex.Message}", ex);
        }
    }

    private static FloatTensor ParseInput(JsonElement input, ReadOnlySpan<byte> binary, ModelBackend model)
    {
        string? name = input.TryGetProperty("name", out JsonElement n) ? n.GetString() : null;
        if (name != model.InputName)
        {
            throw ServeException.BadRequest($"Input '{name}' is not the model's input; its input is '{model.InputName}'.");
        }
        string? datatype = input.TryGetProperty("datatype", out JsonElement d) ? d.GetString() : null;
        if (datatype != "FP32")
        {
            throw ServeException.BadRequest($"Input '{name}' has datatype {datatype ?? "(none)"}; the model takes FP32.");
        }
        if (!input.TryGetProperty("shape", out JsonElement shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
        {
            throw ServeException.BadRequest($"Input '{name}' lacks a \"shape\" array.");
        }
        long[] shape = [.. shapeElement.EnumerateArray().Select(e => e.TryGetInt64(out long v) && v >= 0 ? v : throw ServeException.BadRequest($"Input '{name}' has a shape that is not non-negative integers."))];
        long count = FloatTensor.Count(shape);
        float[] data;
        if (input.TryGetProperty("parameters", out JsonElement parameters) && parameters.ValueKind == JsonValueKind.Object
            && parameters.TryGetProperty("binary_data_size", out JsonElement sizeElement))
        {
            if (!sizeElement.TryGetInt64(out long size) || size != count * sizeof(float) || size != binary.Length)
            {
                throw ServeException.BadRequest($"Input '{name}' has binary_data_size {sizeElement}; shape [{string.Join(",", shape)}] of FP32 needs {count * sizeof(float)} bytes and the binary part has {binary.Length}.");
            }
            data = TensorJson.FromLittle(binary);
        }
        else
        {
            if (binary.Length > 0)
            {
                throw ServeException.BadRequest($"The body has {binary.Length} binary bytes but input '{name}' names no binary_data_size.");
            }
            if (!input.TryGetProperty("data", out JsonElement dataElement))
            {
                throw ServeException.BadRequest($"Input '{name}' has neither \"data\" nor a binary_data_size parameter.");
            }
            var values = new List<float>();
            TensorJson.Flatten(dataElement, values, $"Input '{name}'");
            if (values.Count != count)
            {
                throw ServeException.BadRequest($"Input '{name}' has {values.Count} values; shape [{string.Join(",", shape)}] needs {count}.");
            }
            data = [.. values];
        }
        CheckShape(model.InputName, shape, model);
        return new FloatTensor(data, shape);
    }

    /// <summary>400 naming the input when <paramref name="shape"/> does not fit the model's input (undeclared dimensions, as TorchScript's, fit any).</summary>
    internal static void CheckShape(string name, long[] shape, ModelBackend model)
    {
        if (model.InputDimensions.Length == 0)
        {
            return;
        }
        bool fits = shape.Length == model.InputDimensions.Length;
        for (int i = 0; fits && i < shape.Length; i++)
        {
            fits = model.InputDimensions[i] <= 0 || model.InputDimensions[i] == shape[i];
        }
        if (!fits)
        {
            throw ServeException.BadRequest($"Input '{name}' has shape [{string.Join(",", shape)}]; the model's input takes [{string.Join(",", model.InputDimensions.Select(x => x <= 0 ? -1 : x))}].");
        }
    }

    private static bool Flag(JsonElement parameters, string name) =>
        parameters.ValueKind == JsonValueKind.Object && parameters.TryGetProperty(name, out JsonElement value) && value.ValueKind == JsonValueKind.True;

    private static int IndexOf(IReadOnlyList<string> names, string name)
    {
        for (int i = 0; i < names.Count; i++)
        {
            if (names[i] == name)
            {
                return i;
            }
        }
        return -1;
    }

    /// <summary>The response: its JSON part and its binary part (empty when every output is JSON).</summary>
    public (byte[] Json, byte[] Binary) WriteResponse(string modelName, string modelVersion, ModelBackend model, FloatTensor[] results)
    {
        var binary = new MemoryStream();
        byte[] json = Hosting.HttpIo.Json(w =>
        {
            w.WriteStartObject();
            w.WriteString("model_name", modelName);
            w.WriteString("model_version", modelVersion);
            if (Id is not null)
            {
                w.WriteString("id", Id);
            }
            w.WriteStartArray("outputs");
            foreach ((int index, bool asBinary) in Outputs)
            {
                FloatTensor tensor = results[index];
                w.WriteStartObject();
                w.WriteString("name", model.OutputNames[index]);
                w.WriteString("datatype", "FP32");
                w.WriteStartArray("shape");
                foreach (long dim in tensor.Shape)
                {
                    w.WriteNumberValue(dim);
                }
                w.WriteEndArray();
                if (asBinary)
                {
                    byte[] bytes = TensorJson.Little(tensor.Data);
                    binary.Write(bytes);
                    w.WriteStartObject("parameters");
                    w.WriteNumber("binary_data_size", bytes.Length);
                    w.WriteEndObject();
                }
                else
                {
                    w.WriteStartArray("data");
                    foreach (float value in tensor.Data)
                    {
                        w.WriteNumberValue(value);
                    }
                    w.WriteEndArray();
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        });
        return (json, binary.ToArray());
    }
}
