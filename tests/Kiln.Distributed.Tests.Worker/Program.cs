using System.Globalization;
using Kiln.Distributed;
using Microsoft.Extensions.Logging;
using TorchSharp;

// Usage: Kiln.Distributed.Tests.Worker <scenario>[,<scenario>…] <float32|float64|float16|bfloat16|int32|int64> <count>[,<count>…] [<timeout seconds>]
// Every rank runs every scenario for every count and checks its result against a reference computed locally from
// rank-seeded data (any rank can compute any other rank's data). Exit 0: all matched; 1: a mismatch; 2: an error.
if (args.Length is not (3 or 4))
{
    await Console.Error.WriteLineAsync("usage: <scenario>[,…] <float32|float64|float16|bfloat16|int32|int64> <count>[,…] [<timeout seconds>]").ConfigureAwait(false);
    return 2;
}
string[] scenarios = args[0].Split(',');
torch.ScalarType dtype = args[1] switch
{
    "float32" => torch.ScalarType.Float32,
    "float64" => torch.ScalarType.Float64,
    "int32" => torch.ScalarType.Int32,
    "int64" => torch.ScalarType.Int64,
    "float16" => torch.ScalarType.Float16,
    "bfloat16" => torch.ScalarType.BFloat16,
    _ => throw new ArgumentException($"unknown dtype {args[1]}"),
};
Kiln.Distributed.Tests.Worker.Scenarios.Integer = !torch.is_floating_point(torch.empty(0, dtype: dtype))
    || dtype is torch.ScalarType.Float16 or torch.ScalarType.BFloat16;
int[] counts = [.. args[2].Split(',').Select(c => int.Parse(c, CultureInfo.InvariantCulture))];

ProcessGroupOptions options = args.Length == 4
    ? new ProcessGroupOptions
    {
        Timeout = TimeSpan.FromSeconds(double.Parse(args[3], CultureInfo.InvariantCulture)),
        Logger = new StderrLogger(),
    }
    : ProcessGroupOptions.Default;
using IProcessGroup group = ProcessGroups.InitializeMpi(options);
try
{
    foreach (string scenario in scenarios)
    {
        foreach (int count in counts)
        {
            string? failure = Kiln.Distributed.Tests.Worker.Scenarios.Run(group, scenario, dtype, count);
            if (failure is not null)
            {
                await Console.Error.WriteLineAsync($"FAIL rank {group.Rank}/{group.WorldSize} {scenario} {args[1]} {count}: {failure}").ConfigureAwait(false);
                return 1;
            }
            Console.WriteLine($"OK rank {group.Rank}/{group.WorldSize} {scenario} {args[1]} {count}");
        }
    }
}
catch (Exception e)
{
    await Console.Error.WriteLineAsync($"ERROR rank {group.Rank}/{group.WorldSize}: {e}").ConfigureAwait(false);
    return 2;
}
return 0;

/// <summary>Writes each entry to stderr as "LOG &lt;event id&gt; &lt;level&gt; &lt;message&gt;", for the tests to read.</summary>
internal sealed class StderrLogger : ILogger
{
    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
        Console.Error.WriteLine($"LOG {eventId.Id} {logLevel} {formatter(state, exception)}");
}
