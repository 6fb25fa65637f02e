using Kiln.Launch.Schedulers;
using Kiln.Launch.Schedulers.Local;
using Kiln.Launch.Specs;

namespace Kiln.Launch.Tests;

/// <summary>A temp state folder and a local scheduler whose supervisors run in this process; disposing it cancels what still runs and deletes the folder.</summary>
internal sealed class LocalSandbox : IAsyncDisposable
{
    public LocalSandbox()
    {
        Root = Path.Combine(Path.GetTempPath(), "kiln-local-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(Root);
        Work = Path.Combine(Root, "work");
        Directory.CreateDirectory(Work);
        Scheduler = new LocalScheduler(new LocalSchedulerOptions { StateDirectory = Path.Combine(Root, "state"), WorkingDirectory = Work });
    }

    public string Root { get; }

    /// <summary>The working folder of replicas; scripts leave marker files here.</summary>
    public string Work { get; }

    public LocalScheduler Scheduler { get; }

    public static Role Sh(string name, string script, int replicas = 1, int maxRetries = 0, RetryPolicy policy = RetryPolicy.Application) => new()
    {
        Name = name,
        Entrypoint = "/bin/sh",
        Args = ["-c", script],
        NumReplicas = replicas,
        MaxRetries = maxRetries,
        RetryPolicy = policy,
    };

    public static AppDef App(string name, params Role[] roles) => new() { Name = name, Roles = roles };

    public async Task<AppHandle> SubmitAsync(AppDef app, double grace = 1)
    {
        DryRunInfo request = Scheduler.SubmitDryRun(app, new Dictionary<string, string> { ["cancel_grace"] = grace.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        return await Scheduler.SubmitAsync(request, CancellationToken.None);
    }

    /// <summary>Polls the status until <paramref name="until"/> holds; fails after <paramref name="seconds"/>.</summary>
    public async Task<AppStatus> WaitAsync(AppHandle handle, Func<AppStatus, bool> until, double seconds = 20)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(seconds));
        AppStatus? status = null;
        while (!timeout.IsCancellationRequested)
        {
            status = await Scheduler.DescribeAsync(handle.AppId, CancellationToken.None);
            if (status is not null && until(status))
            {
                return status;
            }
            await Task.Delay(25, CancellationToken.None);
        }
        throw new TimeoutException($"{handle} did not get there in {seconds} s; last state {status?.State} {status?.Message}");
    }

    public Task<AppStatus> WaitForEndAsync(AppHandle handle, double seconds = 20) => WaitAsync(handle, s => s.State.IsTerminal(), seconds);

    public async Task<List<string>> LogAsync(AppHandle handle, string role, int? replica, LogQuery? query = null, double seconds = 20)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(seconds));
        List<string> lines = [];
        await foreach (string line in Scheduler.LogAsync(handle.AppId, role, replica, query ?? new LogQuery(), timeout.Token))
        {
            lines.Add(line);
        }
        return lines;
    }

    public int Count(string fileName) => File.Exists(Path.Combine(Work, fileName)) ? File.ReadAllLines(Path.Combine(Work, fileName)).Length : 0;

    public async ValueTask DisposeAsync()
    {
        await Scheduler.DisposeAsync();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
