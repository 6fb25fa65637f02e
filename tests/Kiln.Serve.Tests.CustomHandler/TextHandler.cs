using System.Globalization;
using System.Text;
using System.Text.Json;
using Kiln.Serve.Handlers;
using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Kiln.Serve.Tests.CustomHandler;

/// <summary>
/// The test handler. model-config.yaml's <c>mode</c> picks what it does: <c>upper</c> (default) uppercases UTF-8 text
/// and answers <c>{"text","batch","model","prefix"}</c>; <c>linear</c> runs the archive's ONNX model (X[N,4] → Y[N,3])
/// on comma-separated floats, the whole batch as one tensor, and answers the outputs as comma-separated text;
/// <c>fail-init</c> throws from Initialize. Bodies <c>fail-early</c> and <c>fail-late</c> fail only their own request
/// (422 from preprocess, 409 from postprocess); <c>crash</c> throws from inference, failing the batch. Responses of
/// <c>upper</c> also count the instances initialized in this load context (<c>instances</c>).
/// </summary>
public sealed partial class TextHandler : InferenceHandler<string, string>
{
    private static int s_initialized;
    private InferenceSession? _session;
    private string _mode = "upper";
    private string _prefix = "";

    /// <inheritdoc/>
    public override void Initialize(InferenceHandlerContext context)
    {
        base.Initialize(context);
        _mode = context.Config.TryGetValue("mode", out string? mode) ? mode : "upper";
        _prefix = context.Config.TryGetValue("prefix", out string? prefix) ? prefix : "";
        Interlocked.Increment(ref s_initialized);
        if (_mode == "fail-init")
        {
            throw new InvalidOperationException("mode fail-init asks Initialize to fail");
        }
        if (_mode == "linear")
        {
            _session = context.OpenOnnxSession();
        }
        LogReady(context.Logger, _mode, context.Manifest.ModelName);
    }

    /// <inheritdoc/>
    protected override string Preprocess(InferenceRequest request)
    {
        string text = Encoding.UTF8.GetString(request.Body.Span);
        return text == "fail-early" ? throw new HandlerException(422, $"request {request.Index} asked to fail in preprocess") : text;
    }

    /// <inheritdoc/>
    protected override IReadOnlyList<string> Inference(IReadOnlyList<string> inputs)
    {
        if (inputs.Contains("crash"))
        {
            throw new InvalidOperationException("a request asked inference to crash");
        }
        return _mode == "linear" ? RunLinear(inputs) : [.. inputs.Select(text => $"{inputs.Count}\n{_prefix}{text.ToUpperInvariant()}")];
    }

    /// <inheritdoc/>
    protected override InferenceResponse Postprocess(string output, InferenceRequest request)
    {
        if (_mode == "linear")
        {
            return InferenceResponse.Text(output);
        }
        int newline = output.IndexOf('\n', StringComparison.Ordinal);
        string text = output[(newline + 1)..];
        if (text.EndsWith("FAIL-LATE", StringComparison.Ordinal))
        {
            throw new HandlerException(409, $"request {request.Index} asked to fail in postprocess");
        }
        var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteString("text", text);
            writer.WriteNumber("batch", int.Parse(output.AsSpan(0, newline), CultureInfo.InvariantCulture));
            writer.WriteString("model", Context.Manifest.ModelName);
            writer.WriteString("contentType", request.ContentType);
            writer.WriteNumber("instances", Volatile.Read(ref s_initialized)); // per load context: each model version has its own statics
            writer.WriteEndObject();
        }
        return new InferenceResponse(buffer.ToArray());
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _session?.Dispose();
        }
        base.Dispose(disposing);
    }

    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "TextHandler ready in mode {Mode} for {Model}")]
    private static partial void LogReady(ILogger logger, string mode, string model);

    private string[] RunLinear(IReadOnlyList<string> inputs)
    {
        float[][] rows = [.. inputs.Select(text => text.Split(',').Select(v => float.Parse(v, CultureInfo.InvariantCulture)).ToArray())];
        var x = new DenseTensor<float>(rows.SelectMany(r => r).ToArray(), [rows.Length, 4]);
        using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> results = _session!.Run([NamedOnnxValue.CreateFromTensor("X", x)]);
        float[] y = [.. results[0].AsEnumerable<float>()];
        int outputs = y.Length / rows.Length;
        return [.. Enumerable.Range(0, rows.Length).Select(r => string.Join(",", y.Skip(r * outputs).Take(outputs).Select(v => v.ToString("R", CultureInfo.InvariantCulture))))];
    }
}

/// <summary>A public class that is not a handler, for the test that names a wrong type.</summary>
public sealed class NotAHandler
{
    /// <summary>Nothing.</summary>
    public static int Answer => 42;
}
