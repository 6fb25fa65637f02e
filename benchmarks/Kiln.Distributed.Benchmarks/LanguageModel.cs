using System.Diagnostics;
using System.Globalization;
using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace Kiln.Distributed.Benchmarks;

/// <summary>
/// Trains the tiny-lm sample's <see cref="Kiln.Samples.TinyLm.TinyLanguageModel"/> on characters of a text file with DDP over the group (or alone when the world is 1) and
/// prints steps/s over the timed steps. Same data, model, batch, dtype and optimizer as torch_tiny_gpt.py.
/// </summary>
internal static class LanguageModel
{
    public static int Run(IProcessGroup group, Device device, string[] args)
    {
        var flags = new Dictionary<string, string>
        {
            ["text"] = "/usr/share/common-licenses/GPL-3", ["layers"] = "6", ["d-model"] = "512", ["heads"] = "8",
            ["seq"] = "256", ["batch"] = "32", ["steps"] = "60", ["warmup"] = "10", ["dtype"] = "bfloat16", ["lr"] = "0.0003", ["overlap"] = "true", ["optimizer"] = "torch",
        };
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            flags[args[i].TrimStart('-')] = args[i + 1];
        }
        int Int(string name) => int.Parse(flags[name], CultureInfo.InvariantCulture);
        ScalarType dtype = flags["dtype"] == "float32" ? ScalarType.Float32 : ScalarType.BFloat16;
        int seq = Int("seq"), batch = Int("batch"), steps = Int("steps"), warmup = Int("warmup");

        byte[] text = Encoding.UTF8.GetBytes(File.ReadAllText(flags["text"]));
        byte[] vocab = [.. text.Distinct().Order()];
        var index = new long[256];
        for (int i = 0; i < vocab.Length; i++)
        {
            index[vocab[i]] = i;
        }
        using Tensor data = tensor(text.Select(c => index[c]).ToArray()).to(device);

        manual_seed(1234);
        var model = new Kiln.Samples.TinyLm.TinyLanguageModel(vocab.Length, seq, Int("d-model"), Int("heads"), Int("layers"));
        model.to(dtype).to(device);
        long parameters = model.parameters().Sum(p => p.numel());
        bool overlap = flags["overlap"] == "true";
        DistributedDataParallel? ddp = group.WorldSize > 1
            ? new DistributedDataParallel(model, group, new DistributedDataParallelOptions { OverlapWithBackward = overlap })
            : null;
        double lr = double.Parse(flags["lr"], CultureInfo.InvariantCulture);
        // "torch": TorchSharp's AdamW (a dozen kernels per parameter); "fused": Kiln's FusedAdamW over flat buffers.
        bool fused = flags["optimizer"] == "fused";
        using optim.Optimizer? optimizer = fused ? null : optim.AdamW(model.parameters(), lr: lr);
        using FusedAdamW? fusedOptimizer = fused ? new FusedAdamW(model.parameters(), lr: lr) : null;
        manual_seed(42 + group.Rank); // seeds the CUDA generators too: each rank draws its own batches
        using Tensor offsets = arange(seq, device: device).unsqueeze(0);

        Stopwatch? clock = null;
        double loss = 0;
        for (int step = 0; step < warmup + steps; step++)
        {
            if (step == warmup)
            {
                Synchronize(device);
                clock = Stopwatch.StartNew();
            }
            using var scope = NewDisposeScope();
            Tensor starts = randint(0, data.shape[0] - seq - 1, [batch, 1], device: device);
            Tensor positions = starts + offsets;
            Tensor x = data[positions];
            Tensor y = data[positions + 1];
            optimizer?.zero_grad();
            fusedOptimizer?.ZeroGrad();
            Tensor logits = model.call(x);
            Tensor l = nn.functional.cross_entropy(logits.view(-1, vocab.Length).to_type(ScalarType.Float32), y.view(-1));
            l.backward();
            ddp?.SynchronizeGradients();
            optimizer?.step();
            fusedOptimizer?.Step();
            if (step == warmup + steps - 1)
            {
                loss = l.item<float>();
            }
        }
        Synchronize(device);
        double seconds = clock!.Elapsed.TotalSeconds;
        if (group.Rank == 0)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{{\"impl\":\"kiln\",\"world\":{group.WorldSize},\"params\":{parameters},\"layers\":{Int("layers")},\"d_model\":{Int("d-model")},\"seq\":{seq},\"batch_per_rank\":{batch},\"dtype\":\"{flags["dtype"]}\",\"overlap\":{(overlap ? "true" : "false")},\"optimizer\":\"{flags["optimizer"]}\",\"steps\":{steps},\"steps_per_s\":{steps / seconds:F2},\"tokens_per_s\":{(double)steps * batch * seq * group.WorldSize / seconds:F0},\"final_loss\":{loss:F4}}}"));
        }
        return 0;
    }

    private static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA)
        {
            cuda.synchronize(device);
        }
    }
}
