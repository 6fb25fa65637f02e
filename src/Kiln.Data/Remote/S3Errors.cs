using Amazon.Runtime;

namespace Kiln.Data.Remote;

/// <summary>AWS SDK failures as <see cref="RemoteStorageException"/>s naming the bucket and key.</summary>
internal static class S3Errors
{
    /// <summary>
    /// "s3://bucket/key: NoSuchKey (404 Not Found): The specified key does not exist." for an error answer;
    /// "s3://bucket/key: Connection refused (127.0.0.1:9000)" for a failure without one (transient).
    /// Returns null for a cancellation of <paramref name="cancellationToken"/>, which goes up unchanged.
    /// </summary>
    public static RemoteStorageException? From(Exception error, string location, CancellationToken cancellationToken)
    {
        if (error is OperationCanceledException && cancellationToken.IsCancellationRequested)
        {
            return null;
        }

        if (error is AmazonServiceException service && service.StatusCode != 0)
        {
            int status = (int)service.StatusCode;
            string code = string.IsNullOrEmpty(service.ErrorCode) ? StatusText.Spell(service.StatusCode).Replace(" ", string.Empty, StringComparison.Ordinal) : service.ErrorCode;
            string detail = string.IsNullOrEmpty(service.Message) ? string.Empty : $": {service.Message}";
            return new RemoteStorageException($"{location}: {code} ({status} {StatusText.Spell(service.StatusCode)}){detail}", error)
            {
                StatusCode = status,
                ErrorCode = code,
                IsTransient = status is 408 or 429 || (status >= 500 && status is not (501 or 505)) || code is "SlowDown" or "RequestTimeout",
            };
        }

        // No answer from the server: find the network failure underneath the SDK's wrapping.
        Exception cause = error;
        while (cause is AmazonClientException or AmazonServiceException && cause.InnerException is not null)
        {
            cause = cause.InnerException;
        }

        bool transient = cause is HttpRequestException or IOException or TimeoutException or OperationCanceledException;
        return new RemoteStorageException($"{location}: {cause.Message}", error) { IsTransient = transient };
    }
}
