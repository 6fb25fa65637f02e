using TorchSharp;
using static TorchSharp.torch;

namespace Kiln.Distributed.Benchmarks;

/// <summary>
/// DDP over NCCL against a single-process run on the same card: a float64 MLP, a global batch of 12 split evenly over
/// the ranks, 20 SGD and 20 AdamW steps; every rank also trains the reference on the whole batch and compares.
/// </summary>
internal static class DdpEquivalence
{
    private const int Steps = 20;
    private const int GlobalBatch = 12;

    public static int Run(IProcessGroup group, Device device)
    {
        int failures = 0;
        foreach (bool adamW in new[] { false, true })
        {
            using var scope = NewDisposeScope();
            var generator = new Generator(11);
            Tensor x = randn([Steps, GlobalBatch, 4], dtype: ScalarType.Float64, generator: generator).to(device);
            Tensor y = randn([Steps, GlobalBatch, 3], dtype: ScalarType.Float64, generator: generator).to(device);

            nn.Module<Tensor, Tensor> reference = Model(device);
            Train(reference, adamW, step => (x[step], y[step]), ddp: null);

            nn.Module<Tensor, Tensor> replica = Model(device);
            if (group.Rank != 0)
            {
                using var noGrad = no_grad();
                foreach (var p in replica.parameters())
                {
                    p.add_(1.0); // rank 0's broadcast must undo this
                }
            }
            var ddp = new DistributedDataParallel(replica, group);
            int share = GlobalBatch / group.WorldSize;
            Train(replica, adamW, step => (x[step].narrow(0, group.Rank * share, share), y[step].narrow(0, group.Rank * share, share)), ddp);

            double worst = 0;
            foreach (var ((name, expected), actual) in reference.named_parameters().Zip(replica.parameters()))
            {
                double diff = ((actual - expected).abs() / expected.abs().clamp_min(1.0)).max().cpu().item<double>();
                worst = Math.Max(worst, diff);
            }
            bool ok = worst <= 1e-9;
            failures += ok ? 0 : 1;
            Console.WriteLine($"{(ok ? "OK" : "FAIL")} rank {group.Rank}/{group.WorldSize} ddp-{(adamW ? "adamw" : "sgd")} {Steps} steps on {device}: max relative difference to the single-process run {worst:G3}");
        }
        return failures;
    }

    private static nn.Module<Tensor, Tensor> Model(Device device)
    {
        manual_seed(7);
        var model = nn.Sequential(("fc1", nn.Linear(4, 8)), ("act", nn.Tanh()), ("fc2", nn.Linear(8, 3)));
        model.to(ScalarType.Float64).to(device);
        return model;
    }

    private static void Train(nn.Module<Tensor, Tensor> model, bool adamW, Func<int, (Tensor X, Tensor Y)> batch, DistributedDataParallel? ddp)
    {
        optim.Optimizer optimizer = adamW ? optim.AdamW(model.parameters(), lr: 0.01) : optim.SGD(model.parameters(), learningRate: 0.1);
        for (int step = 0; step < Steps; step++)
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            (Tensor input, Tensor target) = batch(step);
            nn.functional.mse_loss(model.call(input), target).backward();
            ddp?.SynchronizeGradients();
            optimizer.step();
        }
    }
}
