using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Text.Json;
using Kiln.Distributed;
using Kiln.Samples.Distributed;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

// Data-parallel training of a small CNN on scikit-learn's digits (1797 8×8 images): every rank trains on its shard of
// each global batch, DistributedDataParallel averages the gradients. See README.md.
var flags = new SampleFlags("digits-cnn")
    .Add("data", "digits.csv.gz", "scikit-learn's digits.csv.gz (64 pixels 0..16 and the label per line)")
    .Add("epochs", "10", "passes over the 1500 training images")
    .Add("batch", "64", "global batch size (a multiple of the world size; each rank takes batch/world)")
    .Add("lr", "0.003", "Adam's learning rate")
    .Add("seed", "1", "torch.manual_seed and the per-epoch shuffle")
    .Add("device", "cpu", "cpu (mpi backend) or cuda (nccl backend, one GPU per rank)");
if (!flags.Parse(args))
{
    return 2;
}
int epochs = flags.Int("epochs");
int globalBatch = flags.Int("batch");
double lr = flags.Double("lr");
int seed = flags.Int("seed");

using SampleRun run = SampleRun.Start(flags.String("device"));
if (globalBatch == 0 || globalBatch % run.WorldSize != 0)
{
    Console.Error.WriteLine($"digits-cnn: --batch {globalBatch} must be a positive multiple of the world size {run.WorldSize}");
    return 2;
}
int shard = globalBatch / run.WorldSize;
Device device = run.Device;

(Tensor images, Tensor labels) = Digits.Load(flags.String("data"));
const int TrainCount = 1500;
// A fixed split, the same on every rank and every run: rows in the order of a permutation drawn by Random(0).
Tensor order = tensor(Digits.Permutation(images.shape[0], new Random(0)));
Tensor trainX = images.index(order[..TrainCount]).to(device);
Tensor trainY = labels.index(order[..TrainCount]).to(device);
Tensor testX = images.index(order[TrainCount..]).to(device);
Tensor testY = labels.index(order[TrainCount..]).to(device);

manual_seed(seed);
using var model = new DigitsCnn();
model.to(device);
var ddp = new DistributedDataParallel(model, run.Group);
using var optimizer = optim.Adam(model.parameters(), lr);
run.Log($"digits-cnn: {run.WorldSize} rank(s), backend {run.Group.Backend}, device {device}, {TrainCount} train / {testY.shape[0]} test images, global batch {globalBatch} ({shard} per rank), {epochs} epochs");

int batches = TrainCount / globalBatch;
double firstLoss = double.NaN, lastLoss = double.NaN, accuracy = 0;
var clock = Stopwatch.StartNew();
var progress = new Progress(epochs, "epochs");
for (int epoch = 0; epoch < epochs; epoch++)
{
    model.train();
    using var generator = new Generator((ulong)(seed * 1000 + epoch));
    using Tensor shuffle = randperm(TrainCount, generator: generator).to(device);
    Tensor lossSum = zeros(1, dtype: float64, device: device);
    for (int b = 0; b < batches; b++)
    {
        using var step = NewDisposeScope();
        Tensor rows = shuffle.narrow(0, (b * globalBatch) + (run.Rank * shard), shard);
        optimizer.zero_grad();
        Tensor loss = nn.functional.cross_entropy(model.call(trainX.index(rows)), trainY.index(rows));
        loss.backward();
        ddp.SynchronizeGradients();
        optimizer.step();
        lossSum.add_(loss.detach().to(float64));
    }
    double epochLoss = run.Average(lossSum.cpu().item<double>() / batches);
    lossSum.Dispose();
    accuracy = Digits.Accuracy(model, testX, testY);
    if (epoch == 0)
    {
        firstLoss = epochLoss;
    }
    lastLoss = epochLoss;
    run.Log(string.Create(CultureInfo.InvariantCulture, $"epoch {epoch + 1}/{epochs} loss {epochLoss:F4} test_accuracy {accuracy:F4} ({progress.Line(epoch + 1)})"));
}
double seconds = clock.Elapsed.TotalSeconds;
run.Log(JsonSerializer.Serialize(new
{
    epochs,
    first_loss = Math.Round(firstLoss, 6),
    final_loss = Math.Round(lastLoss, 6),
    test_accuracy = Math.Round(accuracy, 6),
    world_size = run.WorldSize,
    seconds = Math.Round(seconds, 3),
    device = device.ToString(),
}));
run.PrintChecksum(model);
return 0;

/// <summary>conv(1→16, 3×3, pad 1)–ReLU–maxpool 2, conv(16→32, 3×3, pad 1)–ReLU–maxpool 2, flatten, linear 128→10.</summary>
/// <remarks>Submodules are invoked through <c>call</c> (not <c>forward</c>), so that DDP's per-module hooks see them.</remarks>
internal sealed class DigitsCnn : nn.Module<Tensor, Tensor>
{
    private readonly Conv2d _conv1 = nn.Conv2d(1, 16, 3, padding: 1);
    private readonly Conv2d _conv2 = nn.Conv2d(16, 32, 3, padding: 1);
    private readonly Linear _fc = nn.Linear(32 * 2 * 2, 10);

    public DigitsCnn()
        : base(nameof(DigitsCnn))
    {
        register_module("conv1", _conv1);
        register_module("conv2", _conv2);
        register_module("fc", _fc);
    }

    /// <param name="input">[N, 64] pixels scaled to 0..1.</param>
    /// <returns>[N, 10] logits.</returns>
    public override Tensor forward(Tensor input)
    {
        Tensor x = nn.functional.max_pool2d(nn.functional.relu(_conv1.call(input.view(-1, 1, 8, 8))), 2);
        x = nn.functional.max_pool2d(nn.functional.relu(_conv2.call(x)), 2);
        return _fc.call(x.flatten(1));
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _conv1.Dispose();
            _conv2.Dispose();
            _fc.Dispose();
        }
        base.Dispose(disposing);
    }
}

/// <summary>Reading scikit-learn's digits.csv.gz and scoring the model.</summary>
internal static class Digits
{
    /// <summary>The images ([N, 64] float32, pixels / 16) and labels ([N] int64).</summary>
    public static (Tensor Images, Tensor Labels) Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"digits-cnn: no data at {path}; get digits.csv.gz from Debian's python3-sklearn (see README.md)", path);
        }
        var pixels = new List<float>();
        var labels = new List<long>();
        using var reader = new StreamReader(new GZipStream(File.OpenRead(path), CompressionMode.Decompress));
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0)
            {
                continue;
            }
            string[] cells = line.Split(',');
            if (cells.Length != 65)
            {
                throw new InvalidDataException($"{path}: a line has {cells.Length} values, not 64 pixels and a label");
            }
            for (int i = 0; i < 64; i++)
            {
                pixels.Add(float.Parse(cells[i], CultureInfo.InvariantCulture) / 16f);
            }
            labels.Add((long)double.Parse(cells[64], CultureInfo.InvariantCulture));
        }
        return (tensor(pixels.ToArray()).view(-1, 64), tensor(labels.ToArray()));
    }

    /// <summary>0..count−1 shuffled by Fisher–Yates with <paramref name="random"/>.</summary>
    public static long[] Permutation(long count, Random random)
    {
        long[] order = new long[count];
        for (long i = 0; i < count; i++)
        {
            order[i] = i;
        }
        for (long i = count - 1; i > 0; i--)
        {
            long j = random.NextInt64(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    /// <summary>The share of <paramref name="images"/> whose arg-max logit is the label.</summary>
    public static double Accuracy(nn.Module<Tensor, Tensor> model, Tensor images, Tensor labels)
    {
        model.eval();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        Tensor predicted = model.call(images).argmax(1);
        return predicted.eq(labels).to(float64).mean().cpu().item<double>();
    }
}
