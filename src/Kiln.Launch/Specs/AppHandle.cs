using System.Diagnostics.CodeAnalysis;

namespace Kiln.Launch.Specs;

/// <summary>An app's address, <c>scheduler://session/app_id</c> (the session may be empty: <c>local:///app_id</c>).</summary>
public sealed record AppHandle(string Scheduler, string Session, string AppId)
{
    /// <summary>Parses <c>scheduler://session/app_id</c>.</summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out AppHandle? handle)
    {
        handle = null;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }
        int scheme = text.IndexOf("://", StringComparison.Ordinal);
        if (scheme <= 0)
        {
            return false;
        }
        string rest = text[(scheme + 3)..];
        int slash = rest.LastIndexOf('/');
        if (slash < 0 || slash == rest.Length - 1)
        {
            return false;
        }
        handle = new AppHandle(text[..scheme], rest[..slash], rest[(slash + 1)..]);
        return true;
    }

    /// <summary>Parses a handle or throws a <see cref="FormatException"/> that shows the expected form.</summary>
    public static AppHandle Parse(string text) =>
        TryParse(text, out AppHandle? handle) ? handle : throw new FormatException($"\"{text}\" is not an app handle; expected SCHEDULER://SESSION/APP_ID, e.g. local://kiln/echo-3f2a.");

    /// <inheritdoc />
    public override string ToString() => $"{Scheduler}://{Session}/{AppId}";
}
