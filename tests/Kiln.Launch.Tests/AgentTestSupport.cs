using System.Net;
using System.Net.Sockets;

namespace Kiln.Launch.Tests;

/// <summary>Temporary folders, /bin/sh worker scripts and free ports for the agent tests.</summary>
internal sealed class AgentScratch : IDisposable
{
    public AgentScratch()
    {
        Root = Directory.CreateTempSubdirectory("kiln-agent-test-").FullName;
        Out = Directory.CreateDirectory(Path.Combine(Root, "out")).FullName;
    }

    public string Root { get; }

    public string Out { get; }

    /// <summary>Writes an executable sh script; <c>$OUT</c> in <paramref name="body"/> is the out folder.</summary>
    public string Script(string body, string name = "worker.sh")
    {
        string path = Path.Combine(Root, name);
        File.WriteAllText(path, $"#!/bin/sh\nOUT='{Out}'\n{body}\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }

    /// <summary>KEY=VALUE lines of an env dump written by a worker.</summary>
    public Dictionary<string, string> ReadEnv(string file)
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string line in File.ReadAllLines(Path.Combine(Out, file)))
        {
            int equals = line.IndexOf('=', StringComparison.Ordinal);
            if (equals > 0)
            {
                env[line[..equals]] = line[(equals + 1)..];
            }
        }
        return env;
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
