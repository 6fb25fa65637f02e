using System.Net;
using System.Text;

namespace Kiln.Data.Remote;

/// <summary>HTTP statuses as messages show them.</summary>
internal static class StatusText
{
    /// <summary>The status's name in words ("NotFound" → "Not Found"); empty for a code without a name.</summary>
    public static string Spell(HttpStatusCode status)
    {
        string name = status.ToString();
        if (name.Length == 0 || char.IsDigit(name[0]))
        {
            return string.Empty;
        }

        var spelled = new StringBuilder(name.Length + 4);
        foreach (char c in name)
        {
            if (char.IsUpper(c) && spelled.Length > 0)
            {
                spelled.Append(' ');
            }

            spelled.Append(c);
        }

        return spelled.ToString();
    }
}
