namespace Kiln.Launch.Components;

/// <summary>"Did you mean" for mistyped component and option names.</summary>
internal static class Suggestions
{
    /// <summary>The candidate closest to <paramref name="typed"/> (edit distance at most 2, and less than half its
    /// length), as <c>; did you mean X?</c>, or an empty string.</summary>
    public static string DidYouMean(string typed, IEnumerable<string> candidates)
    {
        string? best = null;
        int bestDistance = int.MaxValue;
        foreach (string candidate in candidates)
        {
            int distance = Distance(typed, candidate);
            if (distance < bestDistance)
            {
                best = candidate;
                bestDistance = distance;
            }
        }
        return best is not null && bestDistance > 0 && bestDistance <= 2 && bestDistance * 2 < Math.Max(typed.Length, 2)
            ? $"; did you mean {best}?"
            : "";
    }

    /// <summary>Levenshtein distance, with a swap of two neighbours counted as one edit.</summary>
    internal static int Distance(string a, string b)
    {
        int[,] d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++)
        {
            d[i, 0] = i;
        }
        for (int j = 0; j <= b.Length; j++)
        {
            d[0, j] = j;
        }
        for (int i = 1; i <= a.Length; i++)
        {
            for (int j = 1; j <= b.Length; j++)
            {
                int cost = a[i - 1] == b[j - 1] ? 0 : 1;
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + cost);
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
                {
                    d[i, j] = Math.Min(d[i, j], d[i - 2, j - 2] + 1);
                }
            }
        }
        return d[a.Length, b.Length];
    }
}
