using Kiln.Data.Remote;

namespace Kiln.Data.Tests.Remote;

public sealed class RemoteReadOptionsTests
{
    [Fact]
    public void Defaults_AreTheDocumentedOnes()
    {
        var options = new RemoteReadOptions();

        options.ChunkSize.ShouldBe(8L * 1024 * 1024);
        options.MaxRetries.ShouldBe(5);
        options.InitialBackoff.ShouldBe(TimeSpan.FromMilliseconds(200));
        options.MaxBackoff.ShouldBe(TimeSpan.FromSeconds(10));
        options.ReadTimeout.ShouldBe(TimeSpan.FromSeconds(60));
        new S3StoreOptions().Region.ShouldBe("us-east-1");
        new S3StoreOptions().ListPageSize.ShouldBe(1000);
    }

    [Fact]
    public void Setters_OutOfRange_Throw()
    {
        var options = new RemoteReadOptions();

        Should.Throw<ArgumentOutOfRangeException>(() => options.ChunkSize = 0);
        Should.Throw<ArgumentOutOfRangeException>(() => options.MaxRetries = -1);
        Should.Throw<ArgumentOutOfRangeException>(() => options.MaxRetries = 101);
        Should.Throw<ArgumentOutOfRangeException>(() => options.InitialBackoff = TimeSpan.FromMilliseconds(-1));
        Should.Throw<ArgumentOutOfRangeException>(() => options.MaxBackoff = TimeSpan.FromHours(2));
        Should.Throw<ArgumentOutOfRangeException>(() => options.ReadTimeout = TimeSpan.Zero);
        options.ReadTimeout = Timeout.InfiniteTimeSpan;
        options.ReadTimeout.ShouldBe(Timeout.InfiniteTimeSpan);
        Should.Throw<ArgumentOutOfRangeException>(() => new S3StoreOptions().ListPageSize = 1001);
        Should.Throw<ArgumentException>(() => new S3StoreOptions().Region = " ");
        Should.Throw<ArgumentNullException>(() => new S3StoreOptions().Read = null!);
    }

    [Fact]
    public void Backoff_DoublesWithJitterUpToTheMaximum()
    {
        var options = new RemoteReadOptions { InitialBackoff = TimeSpan.FromMilliseconds(100), MaxBackoff = TimeSpan.FromMilliseconds(1000) };

        for (int sample = 0; sample < 50; sample++)
        {
            RetryBudget.Backoff(options, 1, null).TotalMilliseconds.ShouldBeInRange(50, 100);
            RetryBudget.Backoff(options, 3, null).TotalMilliseconds.ShouldBeInRange(200, 400);
            RetryBudget.Backoff(options, 40, null).TotalMilliseconds.ShouldBeInRange(500, 1000);
        }
    }

    [Fact]
    public void Backoff_RetryAfter_ReplacesTheComputedWaitCappedAtTheMaximum()
    {
        var options = new RemoteReadOptions { InitialBackoff = TimeSpan.FromMilliseconds(100), MaxBackoff = TimeSpan.FromSeconds(2) };

        RetryBudget.Backoff(options, 1, TimeSpan.FromSeconds(1)).ShouldBe(TimeSpan.FromSeconds(1));
        RetryBudget.Backoff(options, 1, TimeSpan.FromMinutes(5)).ShouldBe(TimeSpan.FromSeconds(2));
        RetryBudget.Backoff(options, 1, TimeSpan.FromSeconds(-3)).ShouldBe(TimeSpan.Zero);
    }

    [Fact]
    public async Task FailedAsync_PastMaxRetries_ThrowsKeepingStatusAndCode()
    {
        var options = new RemoteReadOptions { MaxRetries = 1, InitialBackoff = TimeSpan.Zero };
        var budget = new RetryBudget(options, "s3://b/k");
        var error = new RemoteStorageException("s3://b/k: SlowDown (503 Service Unavailable)") { StatusCode = 503, ErrorCode = "SlowDown", IsTransient = true };

        await budget.FailedAsync(error, useAsync: true, CancellationToken.None);
        budget.Retries.ShouldBe(1);
        RemoteStorageException final = await Should.ThrowAsync<RemoteStorageException>(budget.FailedAsync(error, useAsync: false, CancellationToken.None).AsTask());

        final.Message.ShouldBe("s3://b/k: SlowDown (503 Service Unavailable) (gave up after 2 attempts)");
        (final.StatusCode, final.ErrorCode, final.IsTransient).ShouldBe((503, "SlowDown", true));
        final.InnerException.ShouldBeSameAs(error);
        budget.Progressed();
        await budget.FailedAsync(error, useAsync: true, CancellationToken.None);
        budget.Retries.ShouldBe(2);
    }
}
