# The NIF is built by the `:sealkv_nif` compiler below (cargo, then a copy into priv/),
# and loaded by Sealkv.Native with :erlang.load_nif/2: the project needs no Hex package.
defmodule Mix.Tasks.Compile.SealkvNif do
  @moduledoc """
  Builds the Rust NIF (`native/sealkv_nif`, a member of the Cargo workspace two folders
  up) with `cargo build --locked` and copies the library cargo reports into the app's
  `priv/` in `_build` (one per Mix environment).

  The dev and test environments build cargo's `dev` profile (the hot crypto crates are
  optimised there too); `:prod` builds `release`. `SEALKV_NIF_PROFILE=release|dev`
  overrides that. Cargo's own settings (`CARGO_TARGET_DIR`, a config's `target-dir`)
  apply: the library's path is read from cargo's build messages.
  """
  use Mix.Task.Compiler

  @workspace Path.expand("../..", __DIR__)

  @impl true
  def run(_args) do
    profile =
      System.get_env("SEALKV_NIF_PROFILE") || if Mix.env() == :prod, do: "release", else: "dev"

    flags = if profile == "release", do: ["--release"], else: []

    # Diagnostics and progress go to stderr as usual; stdout carries cargo's messages.
    {messages, status} =
      System.cmd(
        "cargo",
        ["build", "--locked", "-p", "sealkv-nif", "--message-format=json-render-diagnostics"] ++
          flags,
        cd: @workspace
      )

    if status != 0, do: Mix.raise("cargo build of the sealkv NIF failed (exit #{status})")

    built =
      messages
      |> String.split("\n")
      |> Enum.filter(&(&1 =~ ~s("reason":"compiler-artifact") and &1 =~ ~s("name":"sealkv_nif")))
      |> Enum.flat_map(&artifacts/1)
      |> Enum.find(&(Path.extname(&1) in [".so", ".dylib", ".dll"])) ||
        Mix.raise("cargo built no sealkv_nif library")

    dest = library()
    File.mkdir_p!(Path.dirname(dest))
    # Copied to a temporary name and renamed: a VM that has the old library loaded
    # keeps its mapping, and a half-copied file is never loaded.
    File.cp!(built, dest <> ".tmp")
    File.rename!(dest <> ".tmp", dest)
    {:ok, []}
  end

  @impl true
  def clean, do: File.rm(library())

  # The paths in a compiler-artifact message's "filenames" (cargo's JSON; no JSON
  # library is at hand in Elixir 1.14 without Hex).
  defp artifacts(message) do
    case Regex.run(~r/"filenames":\[([^\]]*)\]/, message) do
      [_, list] -> Regex.scan(~r/"((?:[^"\\]|\\.)*)"/, list) |> Enum.map(fn [_, p] -> p end)
      nil -> []
    end
  end

  # Where Sealkv.Native loads it from: priv/ of the app in _build (Erlang looks for a
  # .so on every Unix, macOS included).
  defp library do
    ext = if match?({:win32, _}, :os.type()), do: ".dll", else: ".so"
    Path.join([Mix.Project.app_path(), "priv", "libsealkv_nif" <> ext])
  end
end

defmodule Sealkv.MixProject do
  use Mix.Project

  def project do
    [
      app: :sealkv,
      version: "0.1.0",
      # Debian 12 ships 1.14 on OTP 25: the code uses nothing newer.
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:sealkv_nif | Mix.compilers()],
      deps: [],
      elixirc_paths: elixirc_paths(Mix.env())
    ]
  end

  def application do
    [extra_applications: [:logger, :crypto]]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
