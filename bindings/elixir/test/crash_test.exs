defmodule Sealkv.CrashTest do
  # An OS process writing in a loop is SIGKILLed 20 times, at random points: every
  # write it acknowledged is there afterwards, and the file verifies.
  use ExUnit.Case, async: true

  @moduletag :tmp_dir
  @rounds 20

  test "a writer SIGKILLed 20 times loses no acknowledged write", %{tmp_dir: dir} do
    path = Path.join(dir, "crash.sealkv")
    key = :crypto.strong_rand_bytes(32)

    acked =
      Enum.reduce(1..@rounds, 0, fn _round, acked ->
        run_and_kill(path, key, acked + 1, acked, :rand.uniform(40))
      end)

    assert acked >= @rounds
    {:ok, store} = Sealkv.open(path, key: key)
    assert {:ok, []} = Sealkv.verify(store)
    keys = Enum.map(1..acked, &"k#{&1}")
    assert {:ok, found} = Sealkv.get_many(store, "crash", keys)
    missing = Enum.reject(1..acked, &(found["k#{&1}"] == "v#{&1}"))
    assert missing == [], "acknowledged writes lost: #{inspect(missing)}"
    assert {:ok, last} = Sealkv.get(store, "crash", "last")
    # Never older than the last acknowledged write. It may be newer: a write can commit
    # without its acknowledgement reaching us (the VM's output still in its buffers when
    # SIGKILL lands), and the writer goes on meanwhile.
    assert String.to_integer(last) >= acked
  end

  # Starts a writer at index `start`, kills it with SIGKILL once it has acknowledged
  # `target` writes (after a random pause of up to 3 ms, so the kill lands anywhere in
  # a write), and returns the highest index acknowledged.
  defp run_and_kill(path, key, start, acked, target) do
    elixir = System.find_executable("elixir") || flunk("no elixir on PATH")
    ebin = Path.join([Mix.Project.build_path(), "lib", "sealkv", "ebin"])
    script = Path.expand("fixtures/crash_writer.exs", __DIR__)

    port =
      Port.open({:spawn_executable, elixir}, [
        :binary,
        :exit_status,
        {:line, 256},
        {:args, ["-pa", ebin, script, path, Integer.to_string(start)]},
        {:env, [{~c"SEALKV_TEST_KEY", String.to_charlist(Base.encode16(key, case: :lower))}]}
      ])

    collect(port, nil, acked, start - 1 + target)
  end

  defp collect(port, os_pid, acked, kill_at) do
    receive do
      {^port, {:data, {:eol, "pid " <> pid}}} ->
        collect(port, pid, acked, kill_at)

      {^port, {:data, {:eol, "acked " <> i}}} ->
        acked = max(acked, String.to_integer(i))

        if acked == kill_at do
          Process.sleep(:rand.uniform(4) - 1)
          {_, 0} = System.cmd("kill", ["-KILL", os_pid])
        end

        collect(port, os_pid, acked, kill_at)

      {^port, {:data, _other}} ->
        collect(port, os_pid, acked, kill_at)

      {^port, {:exit_status, status}} ->
        # 137 = 128 + SIGKILL; anything else is the writer failing on its own.
        assert status == 137, "the writer exited with #{status}"
        acked
    after
      60_000 -> flunk("the writer neither acknowledged nor exited for 60 s")
    end
  end
end
