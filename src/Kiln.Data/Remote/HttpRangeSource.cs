using System.Net;
using System.Net.Http.Headers;

namespace Kiln.Data.Remote;

/// <summary>One object behind an http or https URL, read with <c>Range</c> requests through an injected <see cref="HttpClient"/>.</summary>
internal sealed class HttpRangeSource : RangedObjectSource
{
    private readonly HttpClient _client;
    private readonly Uri _uri;
    private readonly string _display;
    private bool _syncSendUnsupported;

    public HttpRangeSource(HttpClient client, Uri uri)
    {
        _client = client;
        _uri = uri;
        _display = Display(uri);
    }

    /// <inheritdoc/>
    public override string Location => $"GET {_display}";

    /// <inheritdoc/>
    public override bool RetriesOpen => true;

    /// <summary>The URL as messages show it: without user information, and with any query replaced by <c>?...</c> (it may hold a signature).</summary>
    public static string Display(Uri uri)
    {
        string shown = uri.GetComponents(UriComponents.SchemeAndServer | UriComponents.Path, UriFormat.UriEscaped);
        return uri.Query.Length > 1 ? shown + "?..." : shown;
    }

    /// <summary>Checks that <paramref name="uri"/> is an absolute http or https URL.</summary>
    public static void Validate(Uri uri, string parameterName)
    {
        ArgumentNullException.ThrowIfNull(uri, parameterName);
        if (!uri.IsAbsoluteUri || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw new ArgumentException($"'{uri}' is not an absolute http or https URL.", parameterName);
        }
    }

    /// <inheritdoc/>
    public override async ValueTask<RangedBody> OpenAsync(long start, long? endInclusive, string? ifMatch, bool useAsync, CancellationToken cancellationToken)
    {
        HttpResponseMessage response = await SendAsync(HttpMethod.Get, start, endInclusive, ifMatch, useAsync, cancellationToken).ConfigureAwait(false);
        try
        {
            switch (response.StatusCode)
            {
                case HttpStatusCode.PartialContent:
                {
                    CheckIdentityEncoding(response);
                    ContentRangeHeaderValue? range = response.Content.Headers.ContentRange;
                    if (range is not { From: long from, To: long to } || !string.Equals(range.Unit, "bytes", StringComparison.OrdinalIgnoreCase) || to < from)
                    {
                        throw new RemoteStorageException($"{Location}: 206 Partial Content without a single byte range (Content-Range: {range?.ToString() ?? "none"})") { StatusCode = 206 };
                    }

                    Stream content = await ReadBodyAsync(response, useAsync, cancellationToken).ConfigureAwait(false);
                    return RangedBody.Create(content, response, from, to + 1, range.Length, StrongETag(response));
                }

                case HttpStatusCode.OK:
                {
                    CheckIdentityEncoding(response);
                    long? length = response.Content.Headers.ContentLength;
                    Stream content = await ReadBodyAsync(response, useAsync, cancellationToken).ConfigureAwait(false);
                    return RangedBody.Create(content, response, 0, length, length, StrongETag(response));
                }

                case HttpStatusCode.RequestedRangeNotSatisfiable:
                {
                    long? length = response.Content.Headers.ContentRange?.Length;
                    response.Dispose();
                    return RangedBody.PastTheEnd(length);
                }

                case HttpStatusCode.PreconditionFailed when ifMatch is not null:
                    throw new RemoteStorageException(
                        $"{Location}: 412 Precondition Failed: the object is no longer version {ifMatch}; start again from its beginning") { StatusCode = 412 };

                default:
                    throw StatusError("GET", _display, response);
            }
        }
        catch
        {
            response.Dispose();
            throw;
        }
    }

    /// <summary>The length from <c>HEAD</c>; where HEAD is refused or says no length, from the <c>Content-Range</c> of a one-byte GET.</summary>
    public override async ValueTask<long> GetLengthAsync(bool useAsync, CancellationToken cancellationToken)
    {
        using (HttpResponseMessage head = await SendAsync(HttpMethod.Head, null, null, null, useAsync, cancellationToken).ConfigureAwait(false))
        {
            if (head.IsSuccessStatusCode && head.Content.Headers.ContentLength is long length && head.Content.Headers.ContentEncoding.Count == 0)
            {
                return length;
            }

            // Signed URLs allow only GET (403), some servers no HEAD (405, 501): ask for one byte instead.
            if (!head.IsSuccessStatusCode && head.StatusCode is not (HttpStatusCode.Forbidden or HttpStatusCode.MethodNotAllowed or HttpStatusCode.NotImplemented))
            {
                throw StatusError("HEAD", _display, head);
            }
        }

        using HttpResponseMessage get = await SendAsync(HttpMethod.Get, 0, 0, null, useAsync, cancellationToken).ConfigureAwait(false);
        if (get.StatusCode is HttpStatusCode.PartialContent or HttpStatusCode.RequestedRangeNotSatisfiable
            && get.Content.Headers.ContentRange?.Length is long total)
        {
            return total;
        }

        if (get.StatusCode == HttpStatusCode.OK && get.Content.Headers.ContentLength is long whole && get.Content.Headers.ContentEncoding.Count == 0)
        {
            return whole;
        }

        if (!get.IsSuccessStatusCode)
        {
            throw StatusError("GET", _display, get);
        }

        throw new RemoteStorageException($"{Location}: the server does not tell the object's length (no Content-Length, no Content-Range)");
    }

    /// <summary>The error for an unexpected status: "GET http://host/x: 404 Not Found"; transient for 408, 429 and 5xx but 501 and 505.</summary>
    internal static RemoteStorageException StatusError(string method, string display, HttpResponseMessage response)
    {
        int code = (int)response.StatusCode;
        TimeSpan? retryAfter = response.Headers.RetryAfter switch
        {
            { Delta: TimeSpan delta } => delta,
            { Date: DateTimeOffset date } => date - DateTimeOffset.UtcNow,
            _ => null,
        };
        return new RemoteStorageException($"{method} {display}: {code} {ReasonPhrase(response)}".TrimEnd())
        {
            StatusCode = code,
            IsTransient = code is 408 or 429 || (code >= 500 && code is not (501 or 505)),
            RetryAfter = retryAfter,
        };
    }

    private static string ReasonPhrase(HttpResponseMessage response) =>
        string.IsNullOrEmpty(response.ReasonPhrase) ? StatusText.Spell(response.StatusCode) : response.ReasonPhrase;

    private static string? StrongETag(HttpResponseMessage response) =>
        response.Headers.ETag is { IsWeak: false, Tag: string tag } ? tag : null;

    private void CheckIdentityEncoding(HttpResponseMessage response)
    {
        ICollection<string> encodings = response.Content.Headers.ContentEncoding;
        if (encodings.Count > 0 && !encodings.All(static e => string.Equals(e, "identity", StringComparison.OrdinalIgnoreCase)))
        {
            throw new RemoteStorageException(
                $"{Location}: the server sent Content-Encoding: {string.Join(", ", encodings)}; byte ranges need the object as stored " +
                "(turn off automatic decompression on the HttpClient)") { StatusCode = (int)response.StatusCode };
        }
    }

    private static async ValueTask<Stream> ReadBodyAsync(HttpResponseMessage response, bool useAsync, CancellationToken cancellationToken) =>
        useAsync
            ? await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false)
            : response.Content.ReadAsStream(cancellationToken);

    private async ValueTask<HttpResponseMessage> SendAsync(HttpMethod method, long? start, long? endInclusive, string? ifMatch, bool useAsync, CancellationToken cancellationToken)
    {
        if (!useAsync && !_syncSendUnsupported)
        {
            using HttpRequestMessage request = CreateRequest(method, start, endInclusive, ifMatch);
            try
            {
                return _client.Send(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
            }
            catch (NotSupportedException)
            {
                // A handler without synchronous sends (HTTP/2, a custom handler): block on the async one.
                _syncSendUnsupported = true;
            }
        }

        using HttpRequestMessage again = CreateRequest(method, start, endInclusive, ifMatch);
        Task<HttpResponseMessage> sending = _client.SendAsync(again, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        return useAsync ? await sending.ConfigureAwait(false) : sending.GetAwaiter().GetResult();
    }

    private HttpRequestMessage CreateRequest(HttpMethod method, long? start, long? endInclusive, string? ifMatch)
    {
        var request = new HttpRequestMessage(method, _uri);
        request.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("identity"));
        if (start is long from)
        {
            request.Headers.Range = new RangeHeaderValue(from, endInclusive);
        }

        if (ifMatch is not null)
        {
            request.Headers.IfMatch.Add(EntityTagHeaderValue.Parse(ifMatch));
        }

        return request;
    }
}
