defmodule Sealkv.InteropTest do
  # A store written from Elixir reads back through the sealkv CLI and the Node
  # package (same namespaces and bytes), and the reverse. Needs the CLI
  # (SEALKV_BIN, or the workspace's target/debug/sealkv) and the Node package's
  # native half (npm run build in bindings/node); without them the tests are skipped,
  # unless SEALKV_REQUIRE_INTEROP=1 (scripts/test sets it) makes that a failure.
  use ExUnit.Case, async: true

  @moduletag :tmp_dir
  @workspace Path.expand("../../..", __DIR__)
  @cli System.get_env("SEALKV_BIN") ||
         Path.join(
           System.get_env("CARGO_TARGET_DIR") || Path.join(@workspace, "target"),
           "debug/sealkv"
         )
  @node_native Path.join(@workspace, "bindings/node/native")
  @node_ready System.find_executable("node") != nil and
                File.exists?(@node_native) and
                Enum.any?(File.ls!(@node_native), &String.ends_with?(&1, ".node"))
  @required System.get_env("SEALKV_REQUIRE_INTEROP") == "1"

  if not @required and not File.exists?(@cli), do: @tag(skip: "no sealkv CLI at #{@cli}")

  test "the CLI reads what Elixir wrote, and Elixir reads what the CLI wrote", %{tmp_dir: dir} do
    assert File.exists?(@cli), "no sealkv CLI at #{@cli}"
    path = Path.join(dir, "i.sealkv")
    key = :crypto.strong_rand_bytes(32)
    key_file = Path.join(dir, "key")
    File.write!(key_file, Base.encode16(key, case: :lower))
    value = <<0, 159, 146, 150, 255>> <> "binary from elixir"
    {:ok, store} = Sealkv.create(path, key: key)
    :ok = Sealkv.put(store, "elixir", "bytes", value)
    :ok = Sealkv.put(Sealkv.session(store, "bot-2"), "elixir", "s", "in a session")

    # The store stays open here: the CLI shares the live file.
    assert {^value, 0} = cli(["get", path, "elixir", "bytes"], key_file)
    assert {"in a session", 0} = cli(["get", "--session", "bot-2", path, "elixir", "s"], key_file)
    assert {"elixir\n", 0} = cli(["ls", path], key_file)

    from_cli = Path.join(dir, "from-cli")
    File.write!(from_cli, <<1, 2, 3, 0, 255>>)
    assert {_, 0} = cli(["put", path, "cli", "bytes", from_cli], key_file)
    assert {:ok, <<1, 2, 3, 0, 255>>} = Sealkv.get(store, "cli", "bytes")
    assert {:ok, ["cli", "elixir"]} = Sealkv.namespaces(store)
  end

  if not @required and not @node_ready, do: @tag(skip: "the Node package is not built")

  test "the Node package reads what Elixir wrote, and Elixir reads what Node wrote", %{tmp_dir: dir} do
    assert @node_ready, "the Node package is not built (npm run build in bindings/node)"
    path = Path.join(dir, "n.sealkv")
    key = :crypto.strong_rand_bytes(32)
    value = <<0, 159, 146, 150, 255>> <> "binary from elixir"
    {:ok, store} = Sealkv.create(path, key: key)
    :ok = Sealkv.put(store, "elixir", "bytes", value)

    :ok =
      Sealkv.put(Sealkv.session(store, "bot-2"), "elixir", "session-bytes", "from elixir, in bot-2")

    script = Path.expand("fixtures/interop.mjs", __DIR__)

    {out, status} =
      System.cmd("node", [script, path],
        env: [{"SEALKV_TEST_KEY", Base.encode16(key, case: :lower)}],
        stderr_to_stdout: true
      )

    assert status == 0, out
    assert out =~ ~s("fromElixir":"#{Base.encode16(value, case: :lower)}")
    assert out =~ ~s("inSession":"from elixir, in bot-2")
    assert out =~ ~s("namespaces":["elixir","node"])
    assert {:ok, <<0, 1, 2, 255, 254>>} = Sealkv.get(store, "node", "bytes")

    assert {:ok, "from node, in bot-2"} =
             Sealkv.get(Sealkv.session(store, "bot-2"), "node", "session-bytes")
  end

  defp cli(args, key_file) do
    System.cmd(@cli, ["--key-file", key_file | args], stderr_to_stdout: true)
  end
end
