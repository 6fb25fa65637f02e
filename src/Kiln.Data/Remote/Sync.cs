namespace Kiln.Data.Remote;

/// <summary>Ends the "sync or async" pattern: a task made with <c>useAsync: false</c> is already complete.</summary>
internal static class Sync
{
    /// <summary>The result of a task run synchronously; blocks only if some layer below went async anyway.</summary>
    public static T Complete<T>(ValueTask<T> task) =>
        task.IsCompleted ? task.GetAwaiter().GetResult() : task.AsTask().GetAwaiter().GetResult();

    /// <summary>Waits for a task run synchronously; blocks only if some layer below went async anyway.</summary>
    public static void Complete(ValueTask task)
    {
        if (task.IsCompleted)
        {
            task.GetAwaiter().GetResult();
        }
        else
        {
            task.AsTask().GetAwaiter().GetResult();
        }
    }
}
