namespace Kiln.Data.Remote;

/// <summary>
/// Counts the transient failures of one remote operation, waits between attempts (exponential backoff
/// with jitter, or the server's <c>Retry-After</c>) and gives up after
/// <see cref="RemoteReadOptions.MaxRetries"/> failures in a row. Not thread-safe: one per reader.
/// </summary>
internal sealed class RetryBudget
{
    private readonly RemoteReadOptions _options;
    private readonly string _location;
    private int _failuresInARow;

    public RetryBudget(RemoteReadOptions options, string location)
    {
        _options = options;
        _location = location;
    }

    /// <summary>All retries so far (not reset by progress).</summary>
    public int Retries { get; private set; }

    /// <summary>Bytes arrived: the next failure is the first in a row again.</summary>
    public void Progressed() => _failuresInARow = 0;

    /// <summary>
    /// Records a transient failure and waits before the next attempt, or throws when the budget is
    /// spent: a <see cref="RemoteStorageException"/> that repeats <paramref name="error"/>'s message with
    /// "(gave up after N attempts)".
    /// </summary>
    public async ValueTask FailedAsync(RemoteStorageException error, bool useAsync, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        _failuresInARow++;
        if (_failuresInARow > _options.MaxRetries)
        {
            throw new RemoteStorageException($"{error.Message} (gave up after {_failuresInARow} attempts)", error)
            {
                StatusCode = error.StatusCode,
                ErrorCode = error.ErrorCode,
                IsTransient = true,
            };
        }

        TimeSpan delay = Backoff(_options, _failuresInARow, error.RetryAfter);
        Retries++;
        _options.OnRetry?.Invoke(new RemoteRetry(_location, _failuresInARow, delay, error));
        await DelayAsync(delay, useAsync, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The wait before attempt <paramref name="failuresInARow"/> + 1.</summary>
    internal static TimeSpan Backoff(RemoteReadOptions options, int failuresInARow, TimeSpan? retryAfter)
    {
        if (retryAfter is TimeSpan asked)
        {
            return asked < TimeSpan.Zero ? TimeSpan.Zero : asked > options.MaxBackoff ? options.MaxBackoff : asked;
        }

        double full = options.InitialBackoff.TotalMilliseconds * Math.Pow(2, Math.Min(failuresInARow - 1, 30));
        full = Math.Min(full, options.MaxBackoff.TotalMilliseconds);
        // "Equal jitter": half the wait is fixed, the other half random, so parallel readers spread out.
        return TimeSpan.FromMilliseconds((full / 2) + (Random.Shared.NextDouble() * full / 2));
    }

    private static async ValueTask DelayAsync(TimeSpan delay, bool useAsync, CancellationToken cancellationToken)
    {
        if (delay <= TimeSpan.Zero)
        {
            return;
        }

        if (useAsync)
        {
            await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
        }
        else if (cancellationToken.CanBeCanceled)
        {
            cancellationToken.WaitHandle.WaitOne(delay);
            cancellationToken.ThrowIfCancellationRequested();
        }
        else
        {
            Thread.Sleep(delay);
        }
    }
}
