using System.Globalization;
using System.Net;
using Amazon.S3;
using Amazon.S3.Model;

namespace Kiln.Data.Remote;

/// <summary>One S3 object, read with ranged <c>GetObject</c> requests. The SDK retries each request itself.</summary>
internal sealed class S3RangeSource : RangedObjectSource
{
    private readonly IAmazonS3 _client;
    private readonly string _bucket;
    private readonly string _key;

    public S3RangeSource(IAmazonS3 client, string bucket, string key)
    {
        _client = client;
        _bucket = bucket;
        _key = key;
        Location = $"s3://{bucket}/{key}";
    }

    /// <inheritdoc/>
    public override string Location { get; }

    /// <inheritdoc/>
    public override bool RetriesOpen => false;

    /// <inheritdoc/>
    public override async ValueTask<RangedBody> OpenAsync(long start, long? endInclusive, string? ifMatch, bool useAsync, CancellationToken cancellationToken)
    {
        var request = new GetObjectRequest { BucketName = _bucket, Key = _key };
        if (endInclusive is long end)
        {
            request.ByteRange = new ByteRange(start, end);
        }
        else if (start > 0)
        {
            request.ByteRange = new ByteRange(string.Create(CultureInfo.InvariantCulture, $"bytes={start}-"));
        }

        if (ifMatch is not null)
        {
            request.EtagToMatch = ifMatch;
        }

        GetObjectResponse response;
        try
        {
            Task<GetObjectResponse> getting = _client.GetObjectAsync(request, cancellationToken);
            response = useAsync ? await getting.ConfigureAwait(false) : getting.GetAwaiter().GetResult();
        }
        catch (AmazonS3Exception error) when (error.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable || error.ErrorCode == "InvalidRange")
        {
            return RangedBody.PastTheEnd(objectLength: null);
        }
        catch (AmazonS3Exception error) when (error.StatusCode == HttpStatusCode.PreconditionFailed && ifMatch is not null)
        {
            throw new RemoteStorageException(
                $"{Location}: PreconditionFailed (412): the object is no longer version {ifMatch}; start again from its beginning", error)
            { StatusCode = 412, ErrorCode = error.ErrorCode };
        }
        catch (Exception error) when (S3Errors.From(error, Location, cancellationToken) is RemoteStorageException named)
        {
            throw named;
        }

        try
        {
            string? etag = string.IsNullOrEmpty(response.ETag) ? null : response.ETag;
            if (TryParseContentRange(response.ContentRange, out long from, out long to, out long? total))
            {
                return RangedBody.Create(response.ResponseStream, response, from, to + 1, total, etag);
            }

            long length = response.ContentLength;
            return RangedBody.Create(response.ResponseStream, response, 0, length, length, etag);
        }
        catch
        {
            response.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public override async ValueTask<long> GetLengthAsync(bool useAsync, CancellationToken cancellationToken)
    {
        try
        {
            Task<GetObjectMetadataResponse> asking = _client.GetObjectMetadataAsync(_bucket, _key, cancellationToken);
            GetObjectMetadataResponse metadata = useAsync ? await asking.ConfigureAwait(false) : asking.GetAwaiter().GetResult();
            return metadata.ContentLength;
        }
        catch (Exception error) when (S3Errors.From(error, Location, cancellationToken) is RemoteStorageException named)
        {
            throw named;
        }
    }

    /// <summary>Parses <c>bytes 0-99/1000</c> (or <c>bytes 0-99/*</c>).</summary>
    internal static bool TryParseContentRange(string? text, out long from, out long to, out long? total)
    {
        from = 0;
        to = 0;
        total = null;
        if (text is null || !text.StartsWith("bytes ", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        ReadOnlySpan<char> rest = text.AsSpan(6).Trim();
        int dash = rest.IndexOf('-');
        int slash = rest.IndexOf('/');
        if (dash <= 0 || slash < dash
            || !long.TryParse(rest[..dash], NumberStyles.None, CultureInfo.InvariantCulture, out from)
            || !long.TryParse(rest[(dash + 1)..slash], NumberStyles.None, CultureInfo.InvariantCulture, out to)
            || to < from)
        {
            return false;
        }

        ReadOnlySpan<char> length = rest[(slash + 1)..];
        if (length is "*")
        {
            return true;
        }

        if (!long.TryParse(length, NumberStyles.None, CultureInfo.InvariantCulture, out long parsed))
        {
            return false;
        }

        total = parsed;
        return true;
    }
}
