using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Kiln.Distributed.Benchmarks;

/// <summary>
/// A small decoder-only transformer (GPT-2 style, pre-norm): token and learned position embeddings, blocks of
/// LayerNorm → fused QKV Linear → causal scaled_dot_product_attention → output Linear (residual), LayerNorm → Linear(4d)
/// → GELU → Linear(d) (residual), then LayerNorm and an untied Linear head. benchmarks/distributed/torch_tiny_gpt.py
/// is the same model in PyTorch.
/// </summary>
internal sealed class TinyGpt : nn.Module<Tensor, Tensor>
{
    private readonly Embedding tok;
    private readonly Embedding pos;
    private readonly ModuleList<Block> blocks;
    private readonly LayerNorm norm;
    private readonly Linear head;

    public TinyGpt(long vocab, long sequence, long dModel, long heads, long layers)
        : base(nameof(TinyGpt))
    {
        tok = nn.Embedding(vocab, dModel);
        pos = nn.Embedding(sequence, dModel);
        blocks = nn.ModuleList([.. Enumerable.Range(0, (int)layers).Select(_ => new Block(dModel, heads))]);
        norm = nn.LayerNorm(dModel);
        head = nn.Linear(dModel, vocab);
        RegisterComponents();
    }

    public override Tensor forward(Tensor tokens)
    {
        using var positions = arange(tokens.shape[1], device: tokens.device);
        Tensor x = tok.call(tokens) + pos.call(positions);
        foreach (Block block in blocks)
        {
            x = block.call(x);
        }
        return head.call(norm.call(x));
    }

    private sealed class Block : nn.Module<Tensor, Tensor>
    {
        private readonly long _heads;
        private readonly LayerNorm ln1;
        private readonly Linear qkv;
        private readonly Linear proj;
        private readonly LayerNorm ln2;
        private readonly Linear fc;
        private readonly Linear fcOut;

        public Block(long dModel, long heads)
            : base(nameof(Block))
        {
            _heads = heads;
            ln1 = nn.LayerNorm(dModel);
            qkv = nn.Linear(dModel, 3 * dModel);
            proj = nn.Linear(dModel, dModel);
            ln2 = nn.LayerNorm(dModel);
            fc = nn.Linear(dModel, 4 * dModel);
            fcOut = nn.Linear(4 * dModel, dModel);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            long b = x.shape[0], t = x.shape[1], d = x.shape[2];
            Tensor[] parts = qkv.call(ln1.call(x)).view(b, t, 3, _heads, d / _heads).permute(2, 0, 3, 1, 4).unbind(0);
            Tensor attention = nn.functional.scaled_dot_product_attention(parts[0], parts[1], parts[2], is_casual: true);
            x = x + proj.call(attention.transpose(1, 2).reshape(b, t, d));
            return x + fcOut.call(nn.functional.gelu(fc.call(ln2.call(x))));
        }
    }
}
