using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Kiln.Distributed;
using Kiln.Samples.Distributed;
using Kiln.Samples.TinyLm;
using TorchSharp;
using static TorchSharp.torch;

// A character-level decoder-only transformer trained data-parallel on a text file; prints a JSON line of throughput
// measured after warm-up, for comparison with the same model in PyTorch. See README.md for the exact architecture.
var flags = new SampleFlags("tiny-lm")
    .Add("text", "/usr/share/common-licenses/GPL-3", "the training text (characters are the tokens)")
    .Add("layers", "2", "transformer layers")
    .Add("d-model", "128", "model width")
    .Add("heads", "4", "attention heads (d-model must be a multiple)")
    .Add("seq", "64", "context length in characters")
    .Add("batch", "16", "sequences per rank per step")
    .Add("steps", "200", "optimizer steps")
    .Add("lr", "0.001", "AdamW's learning rate (constant; betas 0.9, 0.999, eps 1e-8, weight decay 0.01)")
    .Add("seed", "1", "torch.manual_seed and the batch sampler's seed")
    .Add("device", "cpu", "cpu (mpi backend) or cuda (nccl backend, one GPU per rank)")
    .Add("dtype", "float32", "float32 or bfloat16 (the whole model and its activations; no autocast)")
    .Add("warmup-steps", "10", "steps left out of the timing")
    .Add("log-every", "20", "print the loss every N steps (0: never)")
    .Add("optimizer", "adamw", "adamw (TorchSharp's, one parameter at a time) or fused (Kiln's FusedAdamW over flat buffers)");
if (!flags.Parse(args))
{
    return 2;
}
int layers = flags.Int("layers"), dModel = flags.Int("d-model"), heads = flags.Int("heads"), seq = flags.Int("seq"), batch = flags.Int("batch");
int steps = flags.Int("steps"), warmup = flags.Int("warmup-steps"), logEvery = flags.Int("log-every"), seed = flags.Int("seed");
double lr = flags.Double("lr");
ScalarType dtype = flags.String("dtype") switch
{
    "float32" => float32,
    "bfloat16" => bfloat16,
    string other => throw new ArgumentException($"--dtype is float32 or bfloat16, not '{other}'"),
};
if (steps <= warmup || layers < 1 || heads < 1 || dModel < 1 || seq < 1 || batch < 1)
{
    Console.Error.WriteLine("tiny-lm: --steps must exceed --warmup-steps, and --layers, --heads, --d-model, --seq and --batch must be at least 1");
    return 2;
}

using SampleRun run = SampleRun.Start(flags.String("device"));
Device device = run.Device;

string text = File.ReadAllText(flags.String("text"));
char[] vocabulary = [.. text.Distinct().Order()];
var ids = vocabulary.Select((c, i) => (c, i)).ToDictionary(p => p.c, p => (long)p.i);
using Tensor corpus = tensor(text.Select(c => ids[c]).ToArray());
if (corpus.shape[0] <= seq + 1)
{
    Console.Error.WriteLine($"tiny-lm: {flags.String("text")} has {corpus.shape[0]} characters, fewer than --seq {seq} + 2");
    return 2;
}

manual_seed(seed);
using var model = new TinyLanguageModel(vocabulary.Length, seq, dModel, heads, layers);
model.to(device).to(dtype);
var ddp = new DistributedDataParallel(model, run.Group);
bool fused = flags.String("optimizer") switch
{
    "adamw" => false,
    "fused" => true,
    string other => throw new ArgumentException($"--optimizer {other}: expected adamw or fused"),
};
using optim.Optimizer? optimizer = fused ? null : optim.AdamW(model.parameters(), lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01);
using FusedAdamW? fusedOptimizer = fused ? new FusedAdamW(model.parameters(), lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01) : null;
long parameterCount = model.parameters().Sum(p => p.numel());
run.Log(string.Create(CultureInfo.InvariantCulture,
    $"tiny-lm: {run.WorldSize} rank(s), backend {run.Group.Backend}, device {device}, {dtype}, {parameterCount:N0} parameters, vocabulary {vocabulary.Length}, {corpus.shape[0]:N0} characters; {layers} layers, d_model {dModel}, {heads} heads, seq {seq}, batch {batch}/rank, {steps} steps"));

// Every rank draws the same global batch of world × batch windows and trains on its own slice of it.
using var sampler = new Generator((ulong)seed);
using Tensor offsets = arange(seq + 1, dtype: int64);
double firstLoss = double.NaN, finalLoss = double.NaN;
var progress = new Progress(steps, "steps");
var clock = new Stopwatch();
if (warmup == 0)
{
    run.Synchronize();
    clock.Start();
}
for (int step = 1; step <= steps; step++)
{
    using var scope = NewDisposeScope();
    Tensor starts = randint(corpus.shape[0] - seq - 1, [run.WorldSize * batch], generator: sampler).narrow(0, run.Rank * batch, batch);
    Tensor windows = corpus.index(starts.unsqueeze(1) + offsets).to(device);
    Tensor inputs = windows.narrow(1, 0, seq);
    Tensor targets = windows.narrow(1, 1, seq);

    optimizer?.zero_grad();
    fusedOptimizer?.ZeroGrad();
    Tensor logits = model.call(inputs);
    Tensor loss = nn.functional.cross_entropy(logits.view(-1, vocabulary.Length), targets.reshape(-1));
    loss.backward();
    ddp.SynchronizeGradients();
    optimizer?.step();
    fusedOptimizer?.Step();

    bool log = step == 1 || step == steps || (logEvery > 0 && step % logEvery == 0);
    if (log)
    {
        double mean = run.Average(loss.to(float64).cpu().item<double>());
        if (step == 1)
        {
            firstLoss = mean;
        }
        finalLoss = mean;
        run.Log(string.Create(CultureInfo.InvariantCulture, $"step {step}/{steps} loss {mean:F4} ({progress.Line(step)})"));
    }
    if (step == warmup)
    {
        run.Synchronize();
        clock.Start();
    }
}
run.Synchronize();
clock.Stop();
double seconds = clock.Elapsed.TotalSeconds;
double stepsPerSecond = (steps - warmup) / seconds;
run.Log(JsonSerializer.Serialize(new
{
    steps,
    steps_per_s = Math.Round(stepsPerSecond, 4),
    tokens_per_s = Math.Round(stepsPerSecond * batch * seq * run.WorldSize, 1),
    world_size = run.WorldSize,
    first_loss = Math.Round(firstLoss, 6),
    final_loss = Math.Round(finalLoss, 6),
    device = device.ToString(),
    dtype = flags.String("dtype"),
    timed_steps = steps - warmup,
    seconds = Math.Round(seconds, 3),
}));
run.PrintChecksum(model);
return 0;
