// pulumi-language-python for dicom-bq's engine tier.
//
// Why this file exists: Pulumi's own Python language host is the Go module
// github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3, which is untagged; the only
// way to fetch it is a pseudo-version of a release commit, and the Go module proxy reachable here
// refuses every one tried (403 "This module version is not available"; scripts/pulumi-engine
// prints the exact command and answer). The engine itself (pkg/v3, sdk/v3 v3.274.0) is served and
// built unchanged. This host is the smallest LanguageRuntime that lets that engine run a Python
// program, a Python policy pack and a Python plugin, and it does so with the SDK's own parts:
// virtualenv resolution (sdk/v3/python/toolchain), the program launcher
// (sdk/v3/python/cmd/pulumi-language-python-exec, shipped in sdk/v3 and placed beside this binary),
// the policy-pack proxy (sdk/v3 policy_proxy.go) and the RPC plumbing (sdk/v3 go/common/util/rpcutil).
// What it does NOT decide: config merging and validation, registration, ordering, diffs, policy
// enforcement. Those are the engine's, which is the point of the engine tier.
//
// The protocol it follows is pulumi/pulumi proto/pulumi/language.proto (v3.274.0).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	sdk "github.com/pulumi/pulumi/sdk/v3"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// The exit code pulumi-language-python-exec uses after it printed a message meant for the user
// (sdk/python/lib/pulumi/cmd/run: _USER_ACTIONABLE_EXIT).
const userActionableExit = 32

const execName = "pulumi-language-python-exec"

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	exec          string
	engineAddress string
}

func main() {
	// Engines before v3.250 also pass `-root=DIR` and each runtime option as `-NAME=VALUE`
	// (sdk/go/common/resource/plugin buildArgsForNewPlugin): Pulumi YAML's host, built against an
	// older pkg/v3, starts this one that way. Only -version counts; the last plain argument is the
	// engine's address.
	var positional []string
	for _, arg := range os.Args[1:] {
		switch {
		case arg == "-version" || arg == "--version":
			fmt.Println(version.Version)
			return
		case strings.HasPrefix(arg, "-"):
			continue
		default:
			positional = append(positional, arg)
		}
	}
	self, err := os.Executable()
	if err != nil {
		cmdutil.Exit(fmt.Errorf("could not find this executable: %w", err))
	}
	execPath := filepath.Join(filepath.Dir(self), execName)
	if _, err := os.Stat(execPath); err != nil {
		cmdutil.Exit(fmt.Errorf("missing %s beside the language host: %w", execName, err))
	}
	h := &host{exec: execPath}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	if len(positional) > 0 {
		h.engineAddress = positional[len(positional)-1]
		if err := rpcutil.Healthcheck(ctx, h.engineAddress, 5*time.Minute, cancel); err != nil {
			cmdutil.Exit(fmt.Errorf("could not start the health check: %w", err))
		}
	}
	stop := make(chan bool)
	go func() {
		<-ctx.Done()
		close(stop)
	}()
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: stop,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		cmdutil.Exit(fmt.Errorf("could not serve: %w", err))
	}
	// The engine reads the port from the first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		cmdutil.Exit(err)
	}
}

func (h *host) Handshake(
	ctx context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.engineAddress = req.EngineAddress
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version.Version}, nil
}

// options reads the runtime options of Pulumi.yaml, PulumiPolicy.yaml or PulumiPlugin.yaml.
func options(info *pulumirpc.ProgramInfo, isPlugin bool) (toolchain.PythonOptions, error) {
	opts := toolchain.PythonOptions{Root: info.RootDirectory, ProgramDir: info.ProgramDirectory}
	raw := map[string]any{}
	if info.Options != nil {
		raw = info.Options.AsMap()
	}
	if v, ok := raw["virtualenv"].(string); ok {
		opts.Virtualenv = v
	}
	switch raw["toolchain"] {
	case nil, "pip":
		opts.Toolchain = toolchain.Pip
	case "uv":
		opts.Toolchain = toolchain.Uv
	case "poetry":
		opts.Toolchain = toolchain.Poetry
	default:
		return opts, fmt.Errorf("unsupported toolchain option %v", raw["toolchain"])
	}
	// Plugins are never run in the ambient Python (the real host defaults them to `venv`).
	if isPlugin && opts.Virtualenv == "" {
		opts.Virtualenv = "venv"
	}
	return opts, nil
}

// toolchainFor resolves the virtualenv and package manager a program or plugin runs with.
func toolchainFor(info *pulumirpc.ProgramInfo, isPlugin bool) (toolchain.Toolchain, error) {
	opts, err := options(info, isPlugin)
	if err != nil {
		return nil, err
	}
	return toolchain.ResolveToolchain(opts)
}

// pluginJSON is what a Pulumi Python SDK package ships to name its provider plugin.
type pluginJSON struct {
	Resource bool   `json:"resource"`
	Name     string `json:"name"`
	Version  string `json:"version"`
	Server   string `json:"server"`
}

// listPluginsScript prints the pulumi-plugin.json of every installed distribution, so the engine
// knows each provider (and its exact version) before the program runs, as the real host does.
const listPluginsScript = `
import importlib.metadata as m, json, sys
found = []
for dist in m.distributions():
    for f in dist.files or []:
        if f.name == "pulumi-plugin.json":
            try:
                plugin = json.loads(f.read_text())
            except Exception:
                continue
            # Without a version in the file, the package's own version names the plugin's.
            plugin.setdefault("version", dist.version)
            found.append(plugin)
json.dump(found, sys.stdout)
`

func (h *host) GetRequiredPackages(
	ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	tc, err := toolchainFor(req.Info, false)
	if err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, "-c", listPluginsScript)
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing the installed Pulumi packages: %w: %s", err, stderr.String())
	}
	var plugins []pluginJSON
	if err := json.Unmarshal(out, &plugins); err != nil {
		return nil, fmt.Errorf("reading the installed Pulumi packages: %w", err)
	}
	var packages []*pulumirpc.PackageDependency
	for _, p := range plugins {
		if !p.Resource || p.Name == "" {
			continue
		}
		packages = append(packages, &pulumirpc.PackageDependency{
			Name: p.Name, Kind: "resource", Version: p.Version, Server: p.Server,
		})
	}
	return &pulumirpc.GetRequiredPackagesResponse{Packages: packages}, nil
}

func (h *host) GetRequiredPlugins(
	ctx context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	got, err := h.GetRequiredPackages(ctx, &pulumirpc.GetRequiredPackagesRequest{Info: req.Info})
	if err != nil {
		return nil, err
	}
	var plugins []*pulumirpc.PluginDependency
	for _, p := range got.Packages {
		plugins = append(plugins, &pulumirpc.PluginDependency{
			Name: p.Name, Kind: p.Kind, Version: p.Version, Server: p.Server,
		})
	}
	return &pulumirpc.GetRequiredPluginsResponse{Plugins: plugins}, nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	tc, err := toolchainFor(req.Info, false)
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	// The launcher's flags (sdk/python/lib/pulumi/cmd/run or pulumi-language-python-exec's argparse).
	args := []string{h.exec}
	add := func(flag, value string) {
		if value != "" {
			args = append(args, "--"+flag, value)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", h.engineAddress)
	add("project", req.GetProject())
	add("root_directory", req.GetInfo().RootDirectory)
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	add("dry_run", strconv.FormatBool(req.GetDryRun()))
	add("parallel", strconv.Itoa(int(req.GetParallel())))
	add("organization", req.GetOrganization())
	args = append(args, req.Info.EntryPoint)
	args = append(args, req.GetArgs()...)

	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return nil, err
	}
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	// The program reads its config from these two variables (pulumi.runtime.config).
	config, err := json.Marshal(req.GetConfig())
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secrets, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	cmd.Env = append(env, "PULUMI_CONFIG="+string(config), "PULUMI_CONFIG_SECRET_KEYS="+string(secrets))
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if status, ok := exitErr.Sys().(syscall.WaitStatus); ok {
				if status.ExitStatus() == userActionableExit {
					return &pulumirpc.RunResponse{Bail: true}, nil
				}
				return &pulumirpc.RunResponse{
					Error: fmt.Sprintf("program exited with non-zero exit code: %d", status.ExitStatus()),
				}, nil
			}
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("problem executing program: %v", err)}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

func (h *host) InstallDependencies(
	req *pulumirpc.InstallDependenciesRequest,
	server pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	tc, err := toolchainFor(req.Info, req.IsPlugin)
	if err != nil {
		return err
	}
	closer, stdout, stderr, err := rpcutil.MakeInstallDependenciesStreams(server, req.IsTerminal)
	if err != nil {
		return err
	}
	defer closer.Close()
	// dicom-bq's environments are made by scripts/bootstrap.sh from the lock files; here the venv
	// only has to be valid. A project with a requirements.txt gets the SDK's own install.
	if _, err := os.Stat(filepath.Join(req.Info.ProgramDirectory, "requirements.txt")); err == nil {
		return tc.InstallDependencies(server.Context(), req.Info.ProgramDirectory,
			req.UseLanguageVersionTools, true, stdout, stderr)
	}
	return tc.ValidateVenv(server.Context())
}

func (h *host) RunPlugin(
	req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer,
) error {
	ctx := server.Context()
	analyzer := req.Kind == string(apitype.AnalyzerPlugin)
	tc, err := toolchainFor(req.Info, !analyzer)
	if err != nil {
		return err
	}
	var args []string
	if analyzer {
		// A Python policy pack is `python -u -m pulumi.policy ARGS... PACK_DIR`.
		args = append([]string{"-u", "-m", "pulumi.policy"}, req.Args...)
		args = append(args, req.Info.ProgramDirectory)
	} else {
		// A Python plugin is its folder's __main__.py.
		args = append([]string{req.Info.ProgramDirectory}, req.Args...)
	}
	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return err
	}
	closer, stdout, stderr, err := rpcutil.MakeRunPluginStreams(server, false)
	if err != nil {
		return err
	}
	defer closer.Close()
	cmd.Dir = req.Pwd
	var proxy *sdk.PolicyProxy
	if analyzer {
		cmd.Dir = req.Info.ProgramDirectory
		// The engine configures the pack through this proxy, which hands the stack's identity
		// and config to the pack's process as the real host does.
		proxy, stdout, err = sdk.NewPolicyProxy(ctx, stdout)
		if err != nil {
			return fmt.Errorf("could not start the policy pack proxy: %w", err)
		}
		config, err := proxy.AwaitConfiguration(ctx)
		if err != nil {
			return fmt.Errorf("could not get the stack configuration: %w", err)
		}
		if config != nil {
			env := map[string]string{
				"PULUMI_ORGANIZATION": config.Organization,
				"PULUMI_PROJECT":      config.Project,
				"PULUMI_STACK":        config.Stack,
				"PULUMI_DRY_RUN":      strconv.FormatBool(config.DryRun),
			}
			if config.Config != nil {
				encoded, err := json.Marshal(config.Config)
				if err != nil {
					return err
				}
				env["PULUMI_CONFIG"] = string(encoded)
			}
			if cmd.Env == nil {
				cmd.Env = os.Environ()
			}
			for k, v := range env {
				if v != "" {
					cmd.Env = append(cmd.Env, k+"="+v)
				}
			}
		}
	}
	if len(req.Env) > 0 && cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, req.Env...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("could not start the plugin: %w", err)
	}
	if proxy != nil {
		if err := proxy.Attach(ctx, cmd); err != nil {
			return fmt.Errorf("could not attach the policy pack proxy: %w", err)
		}
		return closer.Close()
	}
	if err := cmd.Wait(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if status, ok := exitErr.Sys().(syscall.WaitStatus); ok {
				return server.Send(&pulumirpc.RunPluginResponse{
					Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(status.ExitStatus())},
				})
			}
		}
		return fmt.Errorf("plugin failed: %w", err)
	}
	return closer.Close()
}

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	tc, err := toolchainFor(req.Info, false)
	if err != nil {
		return nil, err
	}
	info, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{
		Executable: info.PythonExecutable,
		Version:    info.PythonVersion.String(),
		Metadata:   map[string]string{"host": "dicom-bq engine-tier language host"},
	}, nil
}

func (h *host) GetProgramDependencies(
	ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	tc, err := toolchainFor(req.Info, false)
	if err != nil {
		return nil, err
	}
	packages, err := tc.ListPackages(ctx, req.TransitiveDependencies)
	if err != nil {
		return nil, err
	}
	var deps []*pulumirpc.DependencyInfo
	for _, p := range packages {
		deps = append(deps, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: deps}, nil
}

func (h *host) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}
