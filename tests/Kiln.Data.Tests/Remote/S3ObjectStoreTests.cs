using Kiln.Data.Remote;

namespace Kiln.Data.Tests.Remote;

/// <summary><see cref="S3ObjectStore"/> against a real s3rver on 127.0.0.1, blocking and async.</summary>
[Collection(S3rverGroup.Name)]
public sealed class S3ObjectStoreTests
{
    private const string Bucket = S3rverFixture.Bucket;
    private readonly S3rverFixture _s3;

    public S3ObjectStoreTests(S3rverFixture s3)
    {
        _s3 = s3;
    }

    private static string Prefix() => $"t-{Guid.NewGuid():N}/";

    private static async Task<IReadOnlyList<S3ObjectInfo>> ListAsync(S3ObjectStore store, string bucket, string prefix, bool useAsync) =>
        useAsync ? await store.ListAsync(bucket, prefix) : await Task.Run(() => store.List(bucket, prefix));

    private static async Task<RemoteObjectStream> OpenAsync(S3ObjectStore store, string bucket, string key, long offset, bool useAsync) =>
        useAsync ? await store.OpenReadAsync(bucket, key, offset) : await Task.Run(() => store.OpenRead(bucket, key, offset));

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task List_WithAPrefix_ReturnsOnlyItsKeysSortedOrdinallyWithSizes(bool useAsync)
    {
        string prefix = Prefix();
        string[] keys = ["b/2.bin", "a/1.bin", "B/upper.bin", "a/10.bin", "b/1.bin"];
        for (int i = 0; i < keys.Length; i++)
        {
            await _s3.PutAsync(prefix + keys[i], RemoteTestData.Bytes(100 + i, seed: (uint)(i + 1)));
        }

        await _s3.PutAsync(prefix.TrimEnd('/') + "-sibling/a/1.bin", [1, 2, 3]);
        using var store = new S3ObjectStore(_s3.Options());

        IReadOnlyList<S3ObjectInfo> all = await ListAsync(store, Bucket, prefix, useAsync);
        IReadOnlyList<S3ObjectInfo> underA = await ListAsync(store, Bucket, prefix + "a/", useAsync);

        all.Select(o => o.Key).ShouldBe(new[] { "B/upper.bin", "a/1.bin", "a/10.bin", "b/1.bin", "b/2.bin" }.Select(k => prefix + k));
        all.Select(o => o.Size).ShouldBe([102, 101, 103, 104, 100]);
        all.ShouldAllBe(o => o.ETag != null && o.ETag.Length > 2);
        underA.Select(o => o.Key).ShouldBe([prefix + "a/1.bin", prefix + "a/10.bin"]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task List_MoreKeysThanOnePage_FollowsContinuationTokensToTheEnd(bool useAsync)
    {
        string prefix = Prefix();
        var expected = new List<string>();
        for (int i = 0; i < 23; i++)
        {
            string key = $"{prefix}k{i:D3}";
            expected.Add(key);
            await _s3.PutAsync(key, new byte[i]);
        }

        using var store = new S3ObjectStore(_s3.Options(listPageSize: 4));

        IReadOnlyList<S3ObjectInfo> listed = await ListAsync(store, Bucket, prefix, useAsync);

        listed.Select(o => o.Key).ShouldBe(expected);
        listed.Select(o => o.Size).ShouldBe(Enumerable.Range(0, 23).Select(i => (long)i));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task List_PrefixWithoutKeys_IsEmpty(bool useAsync)
    {
        using var store = new S3ObjectStore(_s3.Options());

        (await ListAsync(store, Bucket, Prefix(), useAsync)).ShouldBeEmpty();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task List_MissingBucket_ThrowsNamingBucketAndNoSuchBucket(bool useAsync)
    {
        using var store = new S3ObjectStore(_s3.Options());

        RemoteStorageException error = await Should.ThrowAsync<RemoteStorageException>(() => ListAsync(store, "no-such-bucket", "x/", useAsync));

        error.ErrorCode.ShouldBe("NoSuchBucket");
        error.StatusCode.ShouldBe(404);
        error.Message.ShouldStartWith("s3://no-such-bucket/x/: NoSuchBucket (404 Not Found)");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_WholeObjectInSeveralChunks_EqualsWhatWasPut(bool useAsync)
    {
        string key = Prefix() + "whole.bin";
        byte[] content = RemoteTestData.Bytes(1_048_583);
        await _s3.PutAsync(key, content);
        using var store = new S3ObjectStore(_s3.Options(chunkSize: 100_000));

        using RemoteObjectStream stream = await OpenAsync(store, Bucket, key, 0, useAsync);
        byte[] read = await RemoteTestData.ReadAllAsync(stream, useAsync, bufferSize: 33_333);

        read.ShouldBe(content);
        stream.ObjectLength.ShouldBe(content.Length);
        stream.Location.ShouldBe($"s3://{Bucket}/{key}");
        stream.ETag.ShouldNotBeNull();
        stream.RangeIgnored.ShouldBeFalse();
    }

    [Theory]
    [InlineData(1L, false)]
    [InlineData(1L, true)]
    [InlineData(500_001L, false)]
    [InlineData(500_001L, true)]
    [InlineData(999_999L, false)]
    [InlineData(999_999L, true)]
    [InlineData(1_000_000L, false)]
    [InlineData(1_000_000L, true)]
    public async Task OpenRead_FromAnOffset_ReturnsTheRest(long offset, bool useAsync)
    {
        string key = Prefix() + "offset.bin";
        byte[] content = RemoteTestData.Bytes(1_000_000, seed: 99);
        await _s3.PutAsync(key, content);
        using var store = new S3ObjectStore(_s3.Options(chunkSize: 300_000));

        using RemoteObjectStream stream = await OpenAsync(store, Bucket, key, offset, useAsync);
        byte[] read = await RemoteTestData.ReadAllAsync(stream, useAsync);

        read.ShouldBe(content[(int)offset..]);
        stream.Position.ShouldBe(content.Length);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Read_ConnectionDroppedMidBody_ResumesAndEqualsWhatWasPut(bool useAsync)
    {
        string key = Prefix() + "dropped.bin";
        byte[] content = RemoteTestData.Bytes(700_001, seed: 5);
        await _s3.PutAsync(key, content);
        await using var proxy = new CuttingProxy(_s3.ServiceUrl.Port, cutConnections: 1, cutAfter: 250_000);
        S3StoreOptions options = _s3.Options();
        options.ServiceUrl = proxy.Url;
        using var store = new S3ObjectStore(options);

        using RemoteObjectStream stream = await OpenAsync(store, Bucket, key, 0, useAsync);
        byte[] read = await RemoteTestData.ReadAllAsync(stream, useAsync);

        read.ShouldBe(content);
        stream.Retries.ShouldBe(1);
        proxy.Connections.ShouldBe(2);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_EmptyObject_IsAnEmptyStream(bool useAsync)
    {
        string key = Prefix() + "empty.bin";
        await _s3.PutAsync(key, []);
        using var store = new S3ObjectStore(_s3.Options());

        using RemoteObjectStream stream = await OpenAsync(store, Bucket, key, 0, useAsync);

        (await RemoteTestData.ReadAllAsync(stream, useAsync)).ShouldBeEmpty();
        stream.ObjectLength.ShouldBe(0);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_PastTheEnd_ThrowsNamingKeyOffsetAndLength(bool useAsync)
    {
        string key = Prefix() + "short.bin";
        await _s3.PutAsync(key, new byte[10]);
        using var store = new S3ObjectStore(_s3.Options());

        RemoteStorageException error = await Should.ThrowAsync<RemoteStorageException>(() => OpenAsync(store, Bucket, key, 11, useAsync));

        error.Message.ShouldBe($"s3://{Bucket}/{key}: offset 11 is past the end of the object (10 bytes)");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_MissingKey_ThrowsNamingBucketKeyAndNoSuchKey(bool useAsync)
    {
        string key = Prefix() + "missing.bin";
        using var store = new S3ObjectStore(_s3.Options());

        RemoteStorageException error = await Should.ThrowAsync<RemoteStorageException>(() => OpenAsync(store, Bucket, key, 0, useAsync));

        error.ErrorCode.ShouldBe("NoSuchKey");
        error.StatusCode.ShouldBe(404);
        error.IsTransient.ShouldBeFalse();
        error.Message.ShouldBe($"s3://{Bucket}/{key}: NoSuchKey (404 Not Found): The specified key does not exist.");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OpenRead_MissingBucket_ThrowsNamingBucketAndNoSuchBucket(bool useAsync)
    {
        using var store = new S3ObjectStore(_s3.Options());

        RemoteStorageException error = await Should.ThrowAsync<RemoteStorageException>(() => OpenAsync(store, "no-such-bucket", "a/b.bin", 0, useAsync));

        error.ErrorCode.ShouldBe("NoSuchBucket");
        error.Message.ShouldStartWith("s3://no-such-bucket/a/b.bin: NoSuchBucket (404 Not Found)");
    }

    [Fact]
    public async Task GetLength_OfAnObject_IsItsSize()
    {
        string key = Prefix() + "sized.bin";
        await _s3.PutAsync(key, new byte[4321]);
        using var store = new S3ObjectStore(_s3.Options());

        store.GetLength(Bucket, key).ShouldBe(4321);
        (await store.GetLengthAsync(Bucket, key)).ShouldBe(4321);
    }

    [Fact]
    public async Task OpenRead_UnknownAccessKey_ThrowsNamingTheS3Code()
    {
        S3StoreOptions options = _s3.Options();
        options.AccessKeyId = "NOT-AN-ACCOUNT";
        using var store = new S3ObjectStore(options);

        RemoteStorageException error = await Should.ThrowAsync<RemoteStorageException>(() => store.OpenReadAsync(Bucket, "any.bin"));

        error.ErrorCode.ShouldBe("InvalidAccessKeyId");
        error.StatusCode.ShouldBe(403);
        error.IsTransient.ShouldBeFalse();
        error.Message.ShouldStartWith($"s3://{Bucket}/any.bin: InvalidAccessKeyId (403 Forbidden)");
    }

    [Fact]
    public async Task List_Anonymous_SendsUnsignedRequests()
    {
        string prefix = Prefix();
        await _s3.PutAsync(prefix + "public.bin", [1, 2, 3]);
        S3StoreOptions options = _s3.Options();
        options.AccessKeyId = null;
        options.SecretAccessKey = null;
        using var store = new S3ObjectStore(options);

        IReadOnlyList<S3ObjectInfo> listed = await store.ListAsync(Bucket, prefix);
        using RemoteObjectStream stream = await store.OpenReadAsync(Bucket, prefix + "public.bin");

        listed.ShouldHaveSingleItem().Key.ShouldBe(prefix + "public.bin");
        (await RemoteTestData.ReadAllAsync(stream, useAsync: true)).ShouldBe([1, 2, 3]);
    }

    [Fact]
    public void Constructor_HalfTheCredentialsOrNoEndpoint_IsRefused()
    {
        Should.Throw<ArgumentException>(() => new S3ObjectStore(new S3StoreOptions { ServiceUrl = _s3.ServiceUrl, AccessKeyId = "only-the-id" }))
            .Message.ShouldContain("AccessKeyId and SecretAccessKey");
        Should.Throw<ArgumentException>(() => new S3ObjectStore(new S3StoreOptions()))
            .Message.ShouldContain("ServiceUrl is required");
    }
}
