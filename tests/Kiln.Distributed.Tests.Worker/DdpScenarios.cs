using System.Globalization;
using static TorchSharp.torch;

namespace Kiln.Distributed.Tests.Worker;

/// <summary>
/// DistributedDataParallel scenarios. Every rank builds the same float64 MLP (fixed seed), perturbs it on ranks other
/// than 0 (the broadcast at construction must undo that), trains on its shard of a fixed global batch, and compares
/// the result with a reference trained in-process on the whole global batch: |ddp − ref| ≤ 1e-9 × max(1, |ref|).
/// The scenario's count is the bucket cap in bytes.
/// </summary>
internal static class DdpScenarios
{
    private const int GlobalBatch = 12;
    private const int Inputs = 4;
    private const int Outputs = 3;
    private const int Steps = 20;
    private const double Tolerance = 1e-9;

    public static string? Run(IProcessGroup group, string scenario, int bucketCapBytes) => scenario switch
    {
        "ddp-sgd" => Train(group, bucketCapBytes, adamW: false, microBatches: 1, Steps),
        "ddp-adamw" => Train(group, bucketCapBytes, adamW: true, microBatches: 1, Steps),
        "ddp-fused" => TrainFused(group, bucketCapBytes),
        "ddp-nosync" => Train(group, bucketCapBytes, adamW: false, microBatches: 2, steps: 3),
        "ddp-partial" => Partial(group, bucketCapBytes),
        "ddp-mismatch" => Mismatch(group),
        "ddp-overlap" => Overlap(group, bucketCapBytes, bypassHooks: false),
        "ddp-overlap-bypass" => Overlap(group, bucketCapBytes, bypassHooks: true),
        "ddp-overlap-backward-thread" => OverlapOnBackwardThread(group, bucketCapBytes),
        "ddp-overlap-blocks" => OverlapBlocks(group, bucketCapBytes),
        "ddp-deterministic-sgd" => Deterministic(group, scenario, bucketCapBytes, adamW: false, ScalarType.Float64),
        "ddp-deterministic-adamw" => Deterministic(group, scenario, bucketCapBytes, adamW: true, ScalarType.Float64),
        "ddp-deterministic-nonfinite" => DeterministicNonFinite(group, bucketCapBytes),
        "ddp-deterministic-sgd-float32" => Deterministic(group, scenario, bucketCapBytes, adamW: false, ScalarType.Float32),
        "ddp-subgroup" => SubGroup(group, bucketCapBytes),
        _ => throw new ArgumentException($"unknown scenario {scenario}"),
    };

    private sealed class Mlp : nn.Module<Tensor, Tensor>
    {
        private readonly nn.Module<Tensor, Tensor> _fc1;
        private readonly nn.Module<Tensor, Tensor> _fc2;
        private readonly nn.Module<Tensor, Tensor> _unused;

        public Mlp(int hidden, ScalarType dtype)
            : base("mlp")
        {
            _fc1 = nn.Linear(Inputs, hidden, dtype: dtype);
            _fc2 = nn.Linear(hidden, Outputs, dtype: dtype);
            _unused = nn.Linear(Outputs, Outputs, dtype: dtype);
            register_module("fc1", _fc1);
            register_module("fc2", _fc2);
            register_module("unused", _unused);
        }

        /// <summary>A head used only where a scenario asks for it (a gradient on some ranks only).</summary>
        public Tensor WithUnused(Tensor x) => _unused.call(forward(x));

        /// <summary>Submodules through <c>call</c>, so that DDP's forward pre-hooks run (overlap with backward).</summary>
        public override Tensor forward(Tensor input) => _fc2.call(tanh(_fc1.call(input)));
    }

    private static Mlp Build(int hidden = 8, ScalarType dtype = ScalarType.Float64)
    {
        manual_seed(7);
        return new Mlp(hidden, dtype);
    }

    private static (Tensor X, Tensor Y) GlobalData()
    {
        var x = new double[GlobalBatch * Inputs];
        var y = new double[GlobalBatch * Outputs];
        for (int i = 0; i < x.Length; i++)
        {
            x[i] = Math.Sin((i * 0.37) + 0.1);
        }
        for (int i = 0; i < y.Length; i++)
        {
            y[i] = Math.Cos(i * 0.53);
        }
        return (tensor(x, dtype: ScalarType.Float64).reshape(GlobalBatch, Inputs), tensor(y, dtype: ScalarType.Float64).reshape(GlobalBatch, Outputs));
    }

    private static void Perturb(nn.Module model, int rank)
    {
        if (rank == 0)
        {
            return;
        }
        using var noGrad = no_grad();
        foreach (Tensor p in model.parameters())
        {
            p.add_(0.5 * rank);
        }
    }

    private static optim.Optimizer Optimizer(nn.Module model, bool adamW) =>
        adamW ? optim.AdamW(model.parameters(), lr: 0.01) : optim.SGD(model.parameters(), 0.1);

    /// <summary>DDP (AdamW) over the sub-group of the first and the last rank; the ranks between stay out of it.</summary>
    private static string? SubGroup(IProcessGroup world, int bucketCapBytes)
    {
        using IProcessGroup? pair = world.NewGroup([0, world.WorldSize - 1]);
        if (pair is null)
        {
            return world.Rank == 0 || world.Rank == world.WorldSize - 1 ? "a member got no group" : null;
        }
        return pair.WorldSize != 2 ? $"a group of {pair.WorldSize}, expected 2" : Train(pair, bucketCapBytes, adamW: true, microBatches: 1, Steps);
    }

    private static string? Train(IProcessGroup group, int bucketCapBytes, bool adamW, int microBatches, int steps)
    {
        int rank = group.Rank, size = group.WorldSize;
        if (GlobalBatch % (size * microBatches) != 0)
        {
            throw new ArgumentException($"the global batch {GlobalBatch} does not split over {size} ranks × {microBatches} micro-batches");
        }
        using Mlp model = Build();
        Perturb(model, rank);
        var ddp = new DistributedDataParallel(model, group, bucketCapBytes);
        using Mlp reference = Build();
        using optim.Optimizer optimizer = Optimizer(model, adamW);
        using optim.Optimizer referenceOptimizer = Optimizer(reference, adamW);
        int shard = GlobalBatch / size, micro = shard / microBatches;
        for (int step = 0; step < steps; step++)
        {
            using var scope = NewDisposeScope();
            (Tensor x, Tensor y) = GlobalData();
            Tensor xs = x.narrow(0, rank * shard, shard), ys = y.narrow(0, rank * shard, shard);

            optimizer.zero_grad();
            for (int m = 0; m < microBatches; m++)
            {
                Tensor loss = nn.functional.mse_loss(model.forward(xs.narrow(0, m * micro, micro)), ys.narrow(0, m * micro, micro)) / microBatches;
                if (m < microBatches - 1)
                {
                    using IDisposable noSync = ddp.NoSync();
                    loss.backward();
                    ddp.SynchronizeGradients(); // does nothing here: the gradients stay local
                    if (ddp.BucketsLaunched != 0)
                    {
                        return $"{ddp.BucketsLaunched} buckets were launched during a backward inside NoSync";
                    }
                }
                else
                {
                    loss.backward();
                    ddp.SynchronizeGradients();
                }
            }
            optimizer.step();

            referenceOptimizer.zero_grad();
            nn.functional.mse_loss(reference.forward(x), y).backward();
            referenceOptimizer.step();
        }
        foreach ((string name, var p) in model.named_parameters())
        {
            if (name.StartsWith("unused", StringComparison.Ordinal) && p.grad is not null)
            {
                return $"{name} was never used but has a gradient";
            }
        }
        return Compare(model, reference);
    }

    /// <summary>
    /// DDP with FusedAdamW, whose gradients are views of one flat buffer in registration order: every bucket must be
    /// all-reduced in that memory (no flattening copy), and 20 steps must match FusedAdamW in one process on the whole
    /// batch (the never-used layer has zero gradients there and here).
    /// </summary>
    private static string? TrainFused(IProcessGroup group, int bucketCapBytes)
    {
        int rank = group.Rank, size = group.WorldSize;
        using Mlp model = Build();
        Perturb(model, rank);
        var ddp = new DistributedDataParallel(model, group, bucketCapBytes);
        using var optimizer = new Kiln.Distributed.FusedAdamW(model.parameters(), lr: 0.01);
        using Mlp reference = Build();
        using var referenceOptimizer = new Kiln.Distributed.FusedAdamW(reference.parameters(), lr: 0.01);
        int shard = GlobalBatch / size;
        for (int step = 0; step < Steps; step++)
        {
            using var scope = NewDisposeScope();
            (Tensor x, Tensor y) = GlobalData();
            optimizer.ZeroGrad();
            nn.functional.mse_loss(model.forward(x.narrow(0, rank * shard, shard)), y.narrow(0, rank * shard, shard)).backward();
            ddp.SynchronizeGradients();
            optimizer.Step();

            referenceOptimizer.ZeroGrad();
            nn.functional.mse_loss(reference.forward(x), y).backward();
            referenceOptimizer.Step();
        }
        if (ddp.BucketsReducedInPlace != Steps * ddp.BucketCount)
        {
            return $"{ddp.BucketsReducedInPlace} of {Steps * ddp.BucketCount} buckets were reduced in the gradients' own memory";
        }
        return Compare(model, reference);
    }

    /// <summary>A 4→8→8→3 MLP whose layers are called through <c>call</c> (hooks run) or <c>forward</c> (they do not).</summary>
    private sealed class Deep : nn.Module<Tensor, Tensor>
    {
        private readonly nn.Module<Tensor, Tensor> _l1 = nn.Linear(Inputs, 8, dtype: ScalarType.Float64);
        private readonly nn.Module<Tensor, Tensor> _l2 = nn.Linear(8, 8, dtype: ScalarType.Float64);
        private readonly nn.Module<Tensor, Tensor> _l3 = nn.Linear(8, Outputs, dtype: ScalarType.Float64);

        public Deep()
            : base("deep")
        {
            register_module("l1", _l1);
            register_module("l2", _l2);
            register_module("l3", _l3);
        }

        public bool BypassHooks { get; set; }

        public override Tensor forward(Tensor input) => BypassHooks
            ? _l3.forward(tanh(_l2.forward(tanh(_l1.forward(input)))))
            : _l3.call(tanh(_l2.call(tanh(_l1.call(input)))));
    }

    /// <summary>
    /// Overlap with backward: 20 SGD steps on <see cref="Deep"/>, the input requiring a gradient on odd steps. After
    /// each backward (before SynchronizeGradients) the buckets launched so far must be exactly those that precede the
    /// first bucket holding l1's parameters (whose marker runs only when the input requires a gradient), or all of them
    /// on odd steps; none when the layers bypass the hooks. The result must match the single-process run.
    /// </summary>
    /// <summary>
    /// Backward on a thread with no dispose scope, as libtorch runs it for CUDA tensors: the markers' gradient wrappers
    /// must still be freed (they once piled up until the GPU ran out of memory), so the live tensor count stays flat.
    /// </summary>
    private static string? OverlapOnBackwardThread(IProcessGroup group, int bucketCapBytes)
    {
        manual_seed(11);
        using var model = new Deep();
        var ddp = new DistributedDataParallel(model, group, bucketCapBytes);
        using optim.Optimizer optimizer = Optimizer(model, adamW: false);
        int shard = GlobalBatch / group.WorldSize;
        long settled = 0;
        for (int step = 0; step < 12; step++)
        {
            using (var scope = NewDisposeScope())
            {
                (Tensor x, Tensor y) = GlobalData();
                optimizer.zero_grad();
                Tensor xs = x.narrow(0, group.Rank * shard, shard).detach().requires_grad_(true);
                Tensor loss = nn.functional.mse_loss(model.forward(xs), y.narrow(0, group.Rank * shard, shard));
                Task.Run(() => loss.backward()).Wait();
                ddp.SynchronizeGradients();
                optimizer.step();
            }
            if (step == 2)
            {
                settled = Tensor.TotalCount;
            }
        }
        return Tensor.TotalCount <= settled ? null : $"{Tensor.TotalCount - settled} tensor wrappers leaked over 9 steps with backward on another thread";
    }

    private static string? Overlap(IProcessGroup group, int bucketCapBytes, bool bypassHooks)
    {
        int rank = group.Rank, size = group.WorldSize;
        Deep Make()
        {
            manual_seed(11);
            return new Deep { BypassHooks = bypassHooks };
        }
        using Deep model = Make();
        Perturb(model, rank);
        // Wrapping again must retire the first wrapper's hooks, or they would launch collectives of their own.
        _ = new DistributedDataParallel(model, group, bucketCapBytes);
        var ddp = new DistributedDataParallel(model, group, bucketCapBytes);
        using Deep reference = Make();
        using optim.Optimizer optimizer = Optimizer(model, adamW: false);
        using optim.Optimizer referenceOptimizer = Optimizer(reference, adamW: false);
        // Buckets hold parameters in reverse registration order; l1's two come last.
        int l1Buckets = 0;
        long bytes = 0;
        foreach (Tensor p in model.parameters().Take(2).Reverse())
        {
            long b = p.numel() * p.element_size();
            if (l1Buckets == 0 || bytes + b > bucketCapBytes)
            {
                l1Buckets++;
                bytes = 0;
            }
            bytes += b;
        }
        int shard = GlobalBatch / size;
        for (int step = 0; step < Steps; step++)
        {
            using var scope = NewDisposeScope();
            (Tensor x, Tensor y) = GlobalData();
            bool inputGrad = step % 2 == 1;
            optimizer.zero_grad();
            Tensor xs = x.narrow(0, rank * shard, shard).detach().requires_grad_(inputGrad);
            nn.functional.mse_loss(model.forward(xs), y.narrow(0, rank * shard, shard)).backward();
            int launched = ddp.BucketsLaunched;
            int expected = bypassHooks ? 0 : inputGrad ? ddp.BucketCount : ddp.BucketCount - l1Buckets;
            if (launched != expected)
            {
                return $"step {step}: {launched} of {ddp.BucketCount} buckets launched during backward, expected {expected}";
            }
            ddp.SynchronizeGradients();
            if (ddp.LastBucketsLaunchedDuringBackward != expected)
            {
                return $"step {step}: SynchronizeGradients found {ddp.LastBucketsLaunchedDuringBackward} buckets launched during backward, expected {expected}";
            }
            optimizer.step();

            referenceOptimizer.zero_grad();
            nn.functional.mse_loss(reference.forward(x), y).backward();
            referenceOptimizer.step();
        }
        Console.WriteLine($"buckets {ddp.BucketCount}, launched during backward {ddp.LastBucketsLaunchedDuringBackward}");
        // TorchSharp's optimizers keep each gradient in its own tensor: one bucket of several of them must be copied
        // into a flat tensor; buckets of one gradient each are reduced in place.
        int expectedInPlace = ddp.BucketCount == 1 ? 0 : Steps * ddp.BucketCount;
        if (ddp.BucketsReducedInPlace != expectedInPlace)
        {
            return $"{ddp.BucketsReducedInPlace} buckets reduced in place, expected {expectedInPlace}";
        }
        if (ddp.HostReadsOfPresenceFlags != 0)
        {
            // Every parameter had a gradient: nothing should have made the host wait for an all-reduce.
            return $"presence flags were read on the host {ddp.HostReadsOfPresenceFlags} times although every gradient was present";
        }
        return Compare(model, reference);
    }

    /// <summary>Two linear layers in one block, called through <c>call</c>.</summary>
    private sealed class Block : nn.Module<Tensor, Tensor>
    {
        private readonly nn.Module<Tensor, Tensor> _a = nn.Linear(Inputs, Inputs, dtype: ScalarType.Float64);
        private readonly nn.Module<Tensor, Tensor> _b = nn.Linear(Inputs, Inputs, dtype: ScalarType.Float64);

        public Block()
            : base("block")
        {
            register_module("a", _a);
            register_module("b", _b);
        }

        public override Tensor forward(Tensor input) => input + _b.call(tanh(_a.call(input)));
    }

    /// <summary>Three <see cref="Block"/>s in a ModuleList (which is not itself hookable), then a linear head.</summary>
    private sealed class Blocks : nn.Module<Tensor, Tensor>
    {
        private readonly TorchSharp.Modules.ModuleList<Block> _blocks = nn.ModuleList(new Block(), new Block(), new Block());
        private readonly nn.Module<Tensor, Tensor> _head = nn.Linear(Inputs, Outputs, dtype: ScalarType.Float64);

        public Blocks()
            : base("blocks")
        {
            // The head first, so the first buckets hold the last block's leaves: a leftover hook of an earlier
            // wrapper on those leaves would launch that wrapper's first bucket.
            register_module("head", _head);
            register_module("blocks", _blocks);
        }

        public override Tensor forward(Tensor input)
        {
            Tensor x = input;
            foreach (Block block in _blocks)
            {
                x = block.call(x);
            }
            return _head.call(x);
        }
    }

    /// <summary>
    /// Readiness per block: with a bucket cap that holds a whole block, the three blocks and the head carry the markers
    /// (4 modules); with a cap smaller than a block, its leaves do (7). The model is wrapped first with the other cap, so
    /// the second wrapper must retire hooks on modules it does not hook itself, or they would launch collectives of the
    /// first wrapper. Every bucket must launch during backward (the input requires a gradient), and 20 SGD steps must
    /// match the single-process run.
    /// </summary>
    private static string? OverlapBlocks(IProcessGroup group, int bucketCapBytes)
    {
        int rank = group.Rank, size = group.WorldSize;
        Blocks Make()
        {
            manual_seed(13);
            return new Blocks();
        }
        using Blocks model = Make();
        Perturb(model, rank);
        const long BlockBytes = 2 * ((Inputs * Inputs) + Inputs) * sizeof(double);
        bool blockFits = bucketCapBytes >= BlockBytes;
        _ = new DistributedDataParallel(model, group, blockFits ? 100 : DistributedDataParallel.DefaultBucketCapBytes);
        var ddp = new DistributedDataParallel(model, group, bucketCapBytes);
        int expectedHooked = blockFits ? 4 : 7;
        if (ddp.HookedModules != expectedHooked)
        {
            return $"{ddp.HookedModules} modules hooked with a {bucketCapBytes}-byte bucket cap, expected {expectedHooked}";
        }
        using Blocks reference = Make();
        using optim.Optimizer optimizer = Optimizer(model, adamW: false);
        using optim.Optimizer referenceOptimizer = Optimizer(reference, adamW: false);
        int shard = GlobalBatch / size;
        for (int step = 0; step < Steps; step++)
        {
            using var scope = NewDisposeScope();
            (Tensor x, Tensor y) = GlobalData();
            optimizer.zero_grad();
            Tensor xs = x.narrow(0, rank * shard, shard).detach().requires_grad_(true);
            nn.functional.mse_loss(model.call(xs), y.narrow(0, rank * shard, shard)).backward();
            if (ddp.BucketsLaunched != ddp.BucketCount)
            {
                return $"step {step}: {ddp.BucketsLaunched} of {ddp.BucketCount} buckets launched during backward, expected all";
            }
            ddp.SynchronizeGradients();
            optimizer.step();

            referenceOptimizer.zero_grad();
            nn.functional.mse_loss(reference.call(x), y).backward();
            referenceOptimizer.step();
        }
        return Compare(model, reference);
    }

    private const int MicroBatch = 2;

    /// <summary>
    /// Deterministic mode: the global batch in micro-batches of <see cref="MicroBatch"/> rows, rank r taking a contiguous
    /// share of them. After 20 steps every parameter must have exactly the bits of a reference trained in this process
    /// without DDP on all micro-batches, whose gradient is the same fixed-point mean written with scalar C# arithmetic
    /// (<see cref="FixedPointMean"/>). Prints a hash of the final parameters' bits, which the test compares across world
    /// sizes.
    /// </summary>
    private static string? Deterministic(IProcessGroup group, string scenario, int bucketCapBytes, bool adamW, ScalarType dtype)
    {
        set_num_threads(1); // per-micro-batch gradients are bit-identical across processes only with equal thread counts
        int rank = group.Rank, size = group.WorldSize;
        const int microBatches = GlobalBatch / MicroBatch;
        int first = rank * microBatches / size, last = (rank + 1) * microBatches / size;
        using Mlp model = Build(dtype: dtype);
        Perturb(model, rank);
        var ddp = new DistributedDataParallel(model, group, new DistributedDataParallelOptions { BucketCapBytes = bucketCapBytes, Deterministic = true });
        using Mlp reference = Build(dtype: dtype);
        using Mlp plain = Build(dtype: dtype);
        using optim.Optimizer optimizer = Optimizer(model, adamW);
        using optim.Optimizer referenceOptimizer = Optimizer(reference, adamW);
        using optim.Optimizer plainOptimizer = Optimizer(plain, adamW);
        for (int step = 0; step < Steps; step++)
        {
            using var scope = NewDisposeScope();
            (Tensor x, Tensor y) = GlobalData();
            x = x.to_type(dtype);
            y = y.to_type(dtype);
            plainOptimizer.zero_grad();
            nn.functional.mse_loss(plain.forward(x), y).backward();
            plainOptimizer.step();

            optimizer.zero_grad();
            for (int m = first; m < last; m++)
            {
                nn.functional.mse_loss(model.forward(x.narrow(0, m * MicroBatch, MicroBatch)), y.narrow(0, m * MicroBatch, MicroBatch)).backward();
                ddp.AccumulateMicroBatch();
            }
            ddp.SynchronizeGradients();
            optimizer.step();

            var grads = reference.named_parameters().ToDictionary(p => p.name, _ => new List<double[]>());
            for (int m = 0; m < microBatches; m++)
            {
                reference.zero_grad();
                nn.functional.mse_loss(reference.forward(x.narrow(0, m * MicroBatch, MicroBatch)), y.narrow(0, m * MicroBatch, MicroBatch)).backward();
                foreach ((string name, var p) in reference.named_parameters())
                {
                    if (p.grad is Tensor g)
                    {
                        grads[name].Add(g.to_type(ScalarType.Float64).contiguous().data<double>().ToArray());
                    }
                }
            }
            foreach ((string name, var p) in reference.named_parameters())
            {
                p.grad = grads[name].Count == 0 ? null : tensor(FixedPointMean(grads[name], microBatches), dtype: ScalarType.Float64).to_type(dtype).view_as(p);
            }
            referenceOptimizer.step();
        }
        var expected = reference.named_parameters().ToDictionary(p => p.name, p => p.parameter.to_type(ScalarType.Float64).contiguous().data<double>().ToArray());
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        foreach ((string name, var p) in model.named_parameters())
        {
            double[] actual = p.to_type(ScalarType.Float64).contiguous().data<double>().ToArray();
            for (int j = 0; j < actual.Length; j++)
            {
                if (BitConverter.DoubleToInt64Bits(actual[j]) != BitConverter.DoubleToInt64Bits(expected[name][j]))
                {
                    return string.Create(CultureInfo.InvariantCulture, $"{name}[{j}] = {actual[j]:R}, the fixed-point reference has {expected[name][j]:R}");
                }
            }
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes(name));
            sha.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(actual.AsSpan()));
        }
        Console.WriteLine($"BITS {scenario} {bucketCapBytes} {Convert.ToHexString(sha.GetHashAndReset())}");
        // How far the fixed-point mean of micro-batch means moves training from plain full-batch float64 training.
        return Compare(model, plain, dtype == ScalarType.Float64 ? Tolerance : 1e-5);
    }

    /// <summary>
    /// Deterministic mode with an infinite input in the last micro-batch (the last rank's): every parameter whose
    /// gradient is not finite in some micro-batch must come out all NaN on every rank, the others exactly the
    /// fixed-point mean, without a hang.
    /// </summary>
    private static string? DeterministicNonFinite(IProcessGroup group, int bucketCapBytes)
    {
        set_num_threads(1);
        int rank = group.Rank, size = group.WorldSize;
        const int microBatches = GlobalBatch / MicroBatch;
        int first = rank * microBatches / size, last = (rank + 1) * microBatches / size;
        using var scope = NewDisposeScope();
        (Tensor x, Tensor y) = GlobalData();
        x[GlobalBatch - 1, 0] = double.PositiveInfinity;
        using Mlp model = Build();
        var ddp = new DistributedDataParallel(model, group, new DistributedDataParallelOptions { BucketCapBytes = bucketCapBytes, Deterministic = true });
        for (int m = first; m < last; m++)
        {
            nn.functional.mse_loss(model.forward(x.narrow(0, m * MicroBatch, MicroBatch)), y.narrow(0, m * MicroBatch, MicroBatch)).backward();
            ddp.AccumulateMicroBatch();
        }
        ddp.SynchronizeGradients();

        using Mlp reference = Build();
        var grads = reference.named_parameters().ToDictionary(p => p.name, _ => new List<double[]>());
        for (int m = 0; m < microBatches; m++)
        {
            reference.zero_grad();
            nn.functional.mse_loss(reference.forward(x.narrow(0, m * MicroBatch, MicroBatch)), y.narrow(0, m * MicroBatch, MicroBatch)).backward();
            foreach ((string name, var p) in reference.named_parameters())
            {
                if (p.grad is Tensor g)
                {
                    grads[name].Add(g.contiguous().data<double>().ToArray());
                }
            }
        }
        int nonFinite = 0;
        foreach ((string name, var p) in model.named_parameters())
        {
            if (grads[name].Count == 0)
            {
                if (p.grad is not null)
                {
                    return $"{name} has a gradient but was never used";
                }
                continue;
            }
            double[] actual = p.grad is Tensor g ? g.contiguous().data<double>().ToArray() : [];
            if (grads[name].Any(a => a.Any(v => !double.IsFinite(v))))
            {
                nonFinite++;
                if (actual.Length != p.numel() || !actual.All(double.IsNaN))
                {
                    return $"{name}: a micro-batch gradient is not finite, but the synchronised gradient is not all NaN";
                }
                continue;
            }
            double[] expected = FixedPointMean(grads[name], microBatches);
            if (!actual.Select(BitConverter.DoubleToInt64Bits).SequenceEqual(expected.Select(BitConverter.DoubleToInt64Bits)))
            {
                return $"{name}: the synchronised gradient differs from the fixed-point mean";
            }
        }
        if (nonFinite == 0)
        {
            return "the infinite input made no gradient non-finite";
        }
        Console.WriteLine($"non-finite parameters {nonFinite}");
        return null;
    }

    /// <summary>
    /// The mean of <paramref name="grads"/> over <paramref name="count"/> micro-batches in 64-bit fixed point, in scalar
    /// arithmetic: scale 2^k with every |g·2^k| below 2^(62 − ⌈log2 count⌉) (k within ±1000), round half to even, sum
    /// as longs, then ·2^−k and / count in double.
    /// </summary>
    private static double[] FixedPointMean(List<double[]> grads, int count)
    {
        double max = grads.SelectMany(g => g).Select(Math.Abs).Max();
        int countBits = 0;
        while ((1L << countBits) < count)
        {
            countBits++;
        }
        int k = max == 0 ? 0 : Math.Clamp(62 - countBits - (Math.ILogB(max) + 1), -1000, 1000);
        var sums = new long[grads[0].Length];
        foreach (double[] g in grads)
        {
            for (int j = 0; j < g.Length; j++)
            {
                sums[j] += (long)Math.Round(Math.ScaleB(g[j], k), MidpointRounding.ToEven);
            }
        }
        return [.. sums.Select(s => Math.ScaleB((double)s, -k) / count)];
    }

    /// <summary>Rank 0 never uses the extra head, the others do: no hang, and every rank gets sum(others) / world size.</summary>
    private static string? Partial(IProcessGroup group, int bucketCapBytes)
    {
        int rank = group.Rank, size = group.WorldSize;
        using Mlp model = Build();
        var ddp = new DistributedDataParallel(model, group, bucketCapBytes);
        using var scope = NewDisposeScope();
        (Tensor x, Tensor y) = GlobalData();
        int shard = GlobalBatch / size;
        Tensor Loss(Mlp m, int r) => r == 0
            ? nn.functional.mse_loss(m.forward(x.narrow(0, 0, shard)), y.narrow(0, 0, shard))
            : nn.functional.mse_loss(m.WithUnused(x.narrow(0, r * shard, shard)), y.narrow(0, r * shard, shard));
        Loss(model, rank).backward();
        ddp.SynchronizeGradients();
        if (rank == 0 && ddp.HostReadsOfPresenceFlags == 0)
        {
            return "rank 0 had no gradient for 'unused' but never read which ranks had one";
        }

        // The expected average, from every rank's local gradients computed here on a fresh replica.
        using Mlp reference = Build();
        var sums = reference.named_parameters().ToDictionary(p => p.name, p => zeros_like(p.parameter));
        for (int r = 0; r < size; r++)
        {
            reference.zero_grad();
            Loss(reference, r).backward();
            foreach ((string name, var p) in reference.named_parameters())
            {
                if (p.grad is not null)
                {
                    sums[name].add_(p.grad);
                }
            }
        }
        foreach ((string name, var p) in model.named_parameters())
        {
            if (p.grad is null)
            {
                return $"{name} has no gradient after synchronisation";
            }
            double diff = (p.grad - (sums[name] / size)).abs().max().item<double>();
            if (!(diff <= Tolerance))
            {
                return $"{name}: gradient differs from the average by {diff}";
            }
        }
        return null;
    }

    /// <summary>Rank 1 has a different hidden size: construction must fail on every rank, naming fc1.weight.</summary>
    private static string? Mismatch(IProcessGroup group)
    {
        using Mlp model = Build(group.Rank == 1 ? 9 : 8);
        try
        {
            _ = new DistributedDataParallel(model, group);
        }
        catch (DistributedException e)
        {
            Console.Error.WriteLine($"MISMATCH rank {group.Rank}: {e.Message}");
            group.Barrier(); // every rank has written its message before any exits
            throw;
        }
        return "construction succeeded although rank 1's hidden size differs";
    }

    private static string? Compare(nn.Module model, nn.Module reference, double tolerance = Tolerance)
    {
        var expected = reference.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        double worst = 0;
        foreach ((string name, var p) in model.named_parameters())
        {
            using var scope = NewDisposeScope();
            Tensor e = expected[name];
            double err = ((p - e).abs() / e.abs().clamp_min(1.0)).max().to_type(ScalarType.Float64).item<double>();
            if (!(err <= tolerance))
            {
                return $"{name}: relative difference {err} from the single-process reference";
            }
            worst = Math.Max(worst, err);
        }
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"max relative difference {worst:E2}"));
        return null;
    }
}
