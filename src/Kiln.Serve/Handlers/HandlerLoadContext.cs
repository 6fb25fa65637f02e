using System.Collections.Frozen;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Loader;

namespace Kiln.Serve.Handlers;

/// <summary>
/// The collectible load context of one model version's custom handler: the handler's own dependencies come from the
/// archive folder (through its <c>.deps.json</c> when it ships one, else by file name next to it); Kiln.Serve,
/// Kiln.Runtime, ONNX Runtime, the logging abstractions and the shared framework are the server's, so the handler
/// implements the server's <see cref="IInferenceHandler"/> and passes sessions and loggers across.
/// </summary>
internal sealed class HandlerLoadContext : AssemblyLoadContext
{
    private static readonly FrozenSet<string> s_shared = FrozenSet.Create(StringComparer.OrdinalIgnoreCase,
        "Kiln.Serve", "Kiln.Runtime", "Microsoft.ML.OnnxRuntime", "Microsoft.Extensions.Logging.Abstractions",
        "Microsoft.Extensions.DependencyInjection.Abstractions");

    private static readonly Lazy<FrozenSet<string>> s_framework = new(ReadFrameworkAssemblies);

    private readonly string _folder;
    private readonly AssemblyDependencyResolver? _resolver;

    public HandlerLoadContext(string name, string mainAssemblyPath)
        : base(name, isCollectible: true)
    {
        _folder = Path.GetDirectoryName(mainAssemblyPath)!;
        if (File.Exists(Path.ChangeExtension(mainAssemblyPath, ".deps.json")))
        {
            _resolver = new AssemblyDependencyResolver(mainAssemblyPath);
        }
    }

    /// <summary>Whether an assembly of this simple name always comes from the server (the default context).</summary>
    public static bool IsShared(string name) => s_shared.Contains(name) || s_framework.Value.Contains(name);

    protected override Assembly? Load(AssemblyName assemblyName)
    {
        string? name = assemblyName.Name;
        if (name is null || IsShared(name))
        {
            return null;
        }
        string? path = _resolver?.ResolveAssemblyToPath(assemblyName);
        if (path is null && Path.GetFileName(name) == name)
        {
            string candidate = Path.Combine(_folder, name + ".dll");
            path = File.Exists(candidate) ? candidate : null;
        }
        return path is null ? null : LoadFromAssemblyPath(path);
    }

    protected override IntPtr LoadUnmanagedDll(string unmanagedDllName)
    {
        string? path = _resolver?.ResolveUnmanagedDllToPath(unmanagedDllName);
        return path is null ? IntPtr.Zero : LoadUnmanagedDllFromPath(path);
    }

    /// <summary>The simple names of the trusted platform assemblies that live in a shared framework folder.</summary>
    private static FrozenSet<string> ReadFrameworkAssemblies()
    {
        // <dotnet>/shared/Microsoft.NETCore.App/<version>/ → <dotnet>/shared/, which also holds Microsoft.AspNetCore.App.
        string runtime = Path.TrimEndingDirectorySeparator(RuntimeEnvironment.GetRuntimeDirectory());
        string shared = Path.GetDirectoryName(Path.GetDirectoryName(runtime)!)! + Path.DirectorySeparatorChar;
        string trusted = AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES") as string ?? "";
        return trusted.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Where(path => path.StartsWith(shared, StringComparison.Ordinal))
            .Select(Path.GetFileNameWithoutExtension)
            .OfType<string>()
            .ToFrozenSet(StringComparer.OrdinalIgnoreCase);
    }
}
