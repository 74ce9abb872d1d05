# The NIF is built by the `:sealkv_nif` compiler below (cargo, then a copy into priv/),
# and loaded by Sealkv.Native with :erlang.load_nif/2: the project needs no Hex package.
defmodule Mix.Tasks.Compile.SealkvNif do
  @moduledoc """
  Builds the Rust NIF (`native/sealkv_nif`, a member of the Cargo workspace two folders
  up) with `cargo build --locked` and copies the library into `priv/`.

  The dev and test environments build cargo's `dev` profile (the hot crypto crates are
  optimised there too); `:prod` builds `release`. `SEALKV_NIF_PROFILE=release|dev`
  overrides that; `CARGO_TARGET_DIR` is honoured.
  """
  use Mix.Task.Compiler

  @workspace Path.expand("../..", __DIR__)

  @impl true
  def run(_args) do
    profile =
      System.get_env("SEALKV_NIF_PROFILE") || if Mix.env() == :prod, do: "release", else: "dev"

    flags = if profile == "release", do: ["--release"], else: []

    {_, status} =
      System.cmd("cargo", ["build", "--locked", "-p", "sealkv-nif" | flags],
        cd: @workspace,
        into: IO.stream(:stdio, :line),
        stderr_to_stdout: true
      )

    if status != 0, do: Mix.raise("cargo build of the sealkv NIF failed (exit #{status})")

    target = Path.expand(System.get_env("CARGO_TARGET_DIR") || "target", @workspace)
    dir = if profile == "release", do: "release", else: "debug"
    built = Path.join([target, dir, library_name()])
    File.mkdir_p!(Path.expand("priv", __DIR__))
    dest = Path.expand("priv/libsealkv_nif.so", __DIR__)

    # Copied to a temporary name and renamed: a VM that has the old library loaded
    # keeps its mapping, and a half-copied file is never loaded.
    tmp = dest <> ".tmp"
    File.cp!(built, tmp)
    File.rename!(tmp, dest)
    {:ok, []}
  end

  defp library_name do
    case :os.type() do
      {:unix, :darwin} -> "libsealkv_nif.dylib"
      {:win32, _} -> "sealkv_nif.dll"
      _ -> "libsealkv_nif.so"
    end
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
