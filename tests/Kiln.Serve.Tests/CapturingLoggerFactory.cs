using Microsoft.Extensions.Logging;

namespace Kiln.Serve.Tests;

/// <summary>A logger factory that records every event (category, id, level, message) for assertions.</summary>
internal sealed class CapturingLoggerFactory : ILoggerFactory
{
    private readonly List<(string Category, int Id, LogLevel Level, string Message)> _events = [];

    public IReadOnlyList<(string Category, int Id, LogLevel Level, string Message)> Events
    {
        get
        {
            lock (_events)
            {
                return [.. _events];
            }
        }
    }

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public ILogger CreateLogger(string categoryName) => new Capturing(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Capturing(CapturingLoggerFactory owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (owner._events)
            {
                owner._events.Add((category, eventId.Id, logLevel, formatter(state, exception)));
            }
        }
    }
}
