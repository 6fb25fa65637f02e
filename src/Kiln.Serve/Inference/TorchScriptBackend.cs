namespace Kiln.Serve.Inference;

/// <summary>A TorchScript archive run through TorchSharp (not written yet).</summary>
internal sealed class TorchScriptBackend : ModelBackend
{
    public TorchScriptBackend(string path, BackendOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        throw new ServeException(400, "ModelException", $"{Path.GetFileName(path)}: TorchScript models are not supported yet.");
    }

    public override string Platform => "pytorch_torchscript";

    public override string InputName => "input__0";

    public override long[] InputDimensions => [];

    public override IReadOnlyList<string> OutputNames => [];

    public override IReadOnlyList<long[]> OutputDimensions => [];

    protected override FloatTensor[] RunOne(FloatTensor input) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
    }
}
