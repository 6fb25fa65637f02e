using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Kiln.Samples.TinyLm;

/// <summary>
/// PyTorch's <c>nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0, activation="gelu",
/// batch_first=True, norm_first=True)</c> with a causal mask, spelled out: TorchSharp 0.107's TransformerEncoderLayer
/// wraps libtorch's C++ module, which has neither norm_first nor batch_first. Same parameters and shapes as PyTorch's
/// (names too, but self_attn.in_proj.weight/bias for in_proj_weight/bias); x = x + SA(LN1(x)); x = x + W2·GELU(W1·LN2(x) + b1) + b2.
/// Submodules are invoked through <c>call</c>, so that DDP's per-module hooks see them.
/// </summary>
internal sealed class PreNormEncoderLayer : nn.Module<Tensor, Tensor>
{
    private readonly CausalSelfAttention _selfAttention;
    private readonly Linear _linear1;
    private readonly Linear _linear2;
    private readonly LayerNorm _norm1;
    private readonly LayerNorm _norm2;

    public PreNormEncoderLayer(long dModel, long heads, long feedForward)
        : base(nameof(PreNormEncoderLayer))
    {
        // PyTorch's construction order.
        _selfAttention = new CausalSelfAttention(dModel, heads);
        _linear1 = nn.Linear(dModel, feedForward);
        _linear2 = nn.Linear(feedForward, dModel);
        _norm1 = nn.LayerNorm(dModel, eps: 1e-5);
        _norm2 = nn.LayerNorm(dModel, eps: 1e-5);
        register_module("self_attn", _selfAttention);
        register_module("linear1", _linear1);
        register_module("linear2", _linear2);
        register_module("norm1", _norm1);
        register_module("norm2", _norm2);
    }

    /// <param name="x">[B, T, d_model].</param>
    public override Tensor forward(Tensor x)
    {
        x = x + _selfAttention.call(_norm1.call(x));
        return x + _linear2.call(nn.functional.gelu(_linear1.call(_norm2.call(x))));
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _selfAttention.Dispose();
            _linear1.Dispose();
            _linear2.Dispose();
            _norm1.Dispose();
            _norm2.Dispose();
        }
        base.Dispose(disposing);
    }
}

/// <summary>
/// PyTorch's <c>nn.MultiheadAttention(d_model, nhead, bias=True, batch_first=True)</c> as self-attention with a causal
/// mask: the packed input projection [3d, d] + [3d] (Xavier-uniform weight, zero bias, as PyTorch's
/// _reset_parameters), <c>out_proj</c> Linear(d, d) with a zero bias; softmax(QKᵀ/√(d/h) + causal)·V per head. The
/// packed projection is a Linear module of its own, <c>in_proj</c> (PyTorch: the parameters <c>in_proj_weight</c> and
/// <c>in_proj_bias</c>), so that DDP's per-module hooks see it ready during backward.
/// </summary>
internal sealed class CausalSelfAttention : nn.Module<Tensor, Tensor>
{
    private readonly long _heads;
    private readonly Linear _inProj;
    private readonly Linear _outProj;

    public CausalSelfAttention(long dModel, long heads)
        : base(nameof(CausalSelfAttention))
    {
        if (dModel % heads != 0)
        {
            throw new ArgumentException($"--d-model {dModel} is not a multiple of --heads {heads}");
        }
        _heads = heads;
        _outProj = nn.Linear(dModel, dModel);
        _inProj = nn.Linear(dModel, 3 * dModel);
        using (no_grad())
        {
            nn.init.xavier_uniform_(_inProj.weight!);
            nn.init.zeros_(_inProj.bias!);
            nn.init.zeros_(_outProj.bias!);
        }
        register_module("in_proj", _inProj);
        register_module("out_proj", _outProj);
    }

    /// <param name="x">[B, T, d_model].</param>
    public override Tensor forward(Tensor x)
    {
        long batch = x.shape[0], time = x.shape[1], model = x.shape[2];
        Tensor[] qkv = _inProj.call(x).chunk(3, -1);
        Tensor q = qkv[0].view(batch, time, _heads, model / _heads).transpose(1, 2);
        Tensor k = qkv[1].view(batch, time, _heads, model / _heads).transpose(1, 2);
        Tensor v = qkv[2].view(batch, time, _heads, model / _heads).transpose(1, 2);
        Tensor attended = nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true);
        return _outProj.call(attended.transpose(1, 2).reshape(batch, time, model));
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _inProj.Dispose();
            _outProj.Dispose();
        }
        base.Dispose(disposing);
    }
}

/// <summary>Token embedding + learned positional embedding, N pre-norm layers, final LayerNorm, linear head.</summary>
internal sealed class TinyLanguageModel : nn.Module<Tensor, Tensor>
{
    private readonly Embedding _tokens;
    private readonly Embedding _positions;
    private readonly ModuleList<PreNormEncoderLayer> _layers;
    private readonly LayerNorm _norm;
    private readonly Linear _head;

    public TinyLanguageModel(long vocabulary, long sequence, long dModel, long heads, int layers)
        : base(nameof(TinyLanguageModel))
    {
        _tokens = nn.Embedding(vocabulary, dModel);
        _positions = nn.Embedding(sequence, dModel);
        _layers = nn.ModuleList([.. Enumerable.Range(0, layers).Select(_ => new PreNormEncoderLayer(dModel, heads, 4 * dModel))]);
        _norm = nn.LayerNorm(dModel, eps: 1e-5);
        _head = nn.Linear(dModel, vocabulary);
        register_module("tok_emb", _tokens);
        register_module("pos_emb", _positions);
        register_module("layers", _layers);
        register_module("norm", _norm);
        register_module("head", _head);
    }

    /// <param name="tokens">[B, T] int64 token ids, T ≤ the sequence length.</param>
    /// <returns>[B, T, vocabulary] logits.</returns>
    public override Tensor forward(Tensor tokens)
    {
        using Tensor positions = arange(tokens.shape[1], dtype: int64, device: tokens.device);
        Tensor x = _tokens.call(tokens) + _positions.call(positions);
        foreach (PreNormEncoderLayer layer in _layers)
        {
            x = layer.call(x);
        }
        return _head.call(_norm.call(x));
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _tokens.Dispose();
            _positions.Dispose();
            _layers.Dispose();
            _norm.Dispose();
            _head.Dispose();
        }
        base.Dispose(disposing);
    }
}
