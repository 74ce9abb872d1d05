defmodule Sealkv.SchedulerTest do
  # The NIF never holds up a normal scheduler: with one normal scheduler online, a
  # ticking process keeps ticking while a full-cost Argon2id open and 1,000 durable
  # writes run. (With more than one, a blocked scheduler would go unseen: the ticker
  # would run on another, so the test brings the VM down to one while it runs.)
  use ExUnit.Case, async: false

  import Sealkv.TestHelpers

  @moduletag :tmp_dir
  @tick_ms 5

  setup do
    before = :erlang.system_flag(:schedulers_online, 1)
    on_exit(fn -> :erlang.system_flag(:schedulers_online, before) end)
  end

  defp ticker(parent, last, gaps) do
    receive do
      :stop -> send(parent, {:gaps, gaps})
    after
      @tick_ms ->
        now = System.monotonic_time(:millisecond)
        ticker(parent, now, [now - last | gaps])
    end
  end

  # Runs `f` while a process ticks every 5 ms: {f's result, ms f took, the longest gap}.
  defp while_ticking(f) do
    parent = self()
    pid = spawn(fn -> ticker(parent, System.monotonic_time(:millisecond), []) end)
    Process.sleep(20)
    started = System.monotonic_time(:millisecond)
    result = f.()
    took = System.monotonic_time(:millisecond) - started
    send(pid, :stop)
    assert_receive {:gaps, gaps}, 5000
    {result, took, Enum.max(gaps)}
  end

  test "a full-cost Argon2id open runs on a dirty scheduler", %{tmp_dir: dir} do
    path = Path.join(dir, "p.sealkv")
    # The default key derivation: 64 MiB, 3 passes.
    {:ok, store} = Sealkv.create(path, passphrase: "correct horse battery")
    :ok = Sealkv.close(store)

    {result, took, gap} =
      while_ticking(fn -> Sealkv.open(path, passphrase: "correct horse battery") end)

    assert {:ok, _} = result
    # The open is long enough that a blocked scheduler would show as a long gap (a
    # 117 ms gap in a 114 ms open when tried on a normal scheduler; 5-10 ms here).
    assert took >= 60, "the open took #{took} ms"
    assert gap < 40, "a #{gap} ms gap between ticks during a #{took} ms open"
  end

  test "1,000 durable writes, and transactions, run on dirty schedulers", %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "w.sealkv"))

    {result, took, gap} =
      while_ticking(fn ->
        Enum.each(1..1000, fn i -> :ok = Sealkv.put(store, "ns", "k#{rem(i, 50)}", "value #{i}") end)

        Enum.each(1..200, fn i ->
          {:ok, :ok} =
            Sealkv.transaction(Sealkv.session(store, "s"), "k", fn tx ->
              {:ok, _} = Sealkv.get(tx, "ns", "k")
              Sealkv.put(tx, "ns", "k", "value #{i}")
            end)
        end)
      end)

    assert :ok = result
    # On a normal scheduler a write is a few reductions: hundreds of them would run
    # before the ticker got its turn (a 170 ms gap when tried).
    assert gap < 50, "a #{gap} ms gap between ticks during #{took} ms of writes"
  end
end
