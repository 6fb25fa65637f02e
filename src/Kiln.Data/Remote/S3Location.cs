using System.Diagnostics.CodeAnalysis;

namespace Kiln.Data.Remote;

/// <summary>
/// A bucket and a key (or key prefix), as written <c>s3://bucket/key</c>. The key is taken verbatim: no
/// percent-decoding, and <c>?</c> or <c>#</c> are part of it, as S3 allows them in keys.
/// </summary>
/// <param name="Bucket">The bucket name.</param>
/// <param name="Key">The key or key prefix; empty for the whole bucket.</param>
internal readonly record struct S3Location(string Bucket, string Key)
{
    private const string Scheme = "s3://";

    /// <summary>Parses <c>s3://bucket</c>, <c>s3://bucket/</c> or <c>s3://bucket/prefix/key</c> (scheme in any case).</summary>
    /// <exception cref="FormatException">The text is not such a URI; the message says why.</exception>
    public static S3Location Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return TryParse(text, out S3Location location, out string? problem)
            ? location
            : throw new FormatException($"'{text}' is not an S3 location: {problem}");
    }

    /// <summary>Parses like <see cref="Parse"/>, answering false instead of throwing.</summary>
    public static bool TryParse([NotNullWhen(true)] string? text, out S3Location location) =>
        TryParse(text, out location, out _);

    /// <inheritdoc/>
    public override string ToString() => $"{Scheme}{Bucket}/{Key}";

    private static bool TryParse(string? text, out S3Location location, [NotNullWhen(false)] out string? problem)
    {
        location = default;
        if (text is null || !text.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase))
        {
            problem = "it must start with s3://";
            return false;
        }

        string rest = text[Scheme.Length..];
        int slash = rest.IndexOf('/', StringComparison.Ordinal);
        string bucket = slash < 0 ? rest : rest[..slash];
        string key = slash < 0 ? string.Empty : rest[(slash + 1)..];
        if (bucket.Length == 0)
        {
            problem = "the bucket name is missing (s3://bucket/key)";
            return false;
        }

        foreach (char c in bucket)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_'))
            {
                problem = $"the bucket name '{bucket}' may hold only letters, digits, '.', '-' and '_'";
                return false;
            }
        }

        location = new S3Location(bucket, key);
        problem = null;
        return true;
    }
}
