defmodule Sealkv.TransactionTest do
  use ExUnit.Case, async: true

  import Sealkv.TestHelpers

  @moduletag :tmp_dir

  defp counter(tx) do
    {:ok, n} = Sealkv.get(tx, "counters", "n")
    n = if n, do: String.to_integer(n), else: 0
    :ok = Sealkv.put(tx, "counters", "n", Integer.to_string(n + 1))
    n + 1
  end

  test "concurrent processes incrementing under one lock key lose no update", %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "t.sealkv"))
    workers = 16
    each = 10

    1..workers
    |> Task.async_stream(
      fn _ ->
        for _ <- 1..each do
          # A yield between the read and the write, so that without the lock key
          # another process would read the same value.
          {:ok, _} =
            Sealkv.transaction(store, "counter", fn tx ->
              {:ok, n} = Sealkv.get(tx, "counters", "n")
              Process.sleep(1)
              n = if n, do: String.to_integer(n), else: 0
              :ok = Sealkv.put(tx, "counters", "n", Integer.to_string(n + 1))
            end)
        end
      end,
      max_concurrency: workers,
      timeout: 120_000
    )
    |> Stream.run()

    assert {:ok, n} = Sealkv.get(store, "counters", "n")
    assert String.to_integer(n) == workers * each
  end

  test "reads see the transaction's own writes and deletes; the result is {:ok, value}",
       %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "t.sealkv"))
    :ok = Sealkv.put(store, "ns", "gone", "x")

    assert {:ok, {1, nil, "new"}} =
             Sealkv.transaction(store, "k", fn tx ->
               n = counter(tx)
               :ok = Sealkv.delete(tx, "ns", "gone")
               :ok = Sealkv.set(tx, [{"ns", "new", "new"}])
               {:ok, gone} = Sealkv.get(tx, "ns", "gone")
               {:ok, %{"new" => new}} = Sealkv.get_many(tx, "ns", ["new", "gone"])
               # Nothing is visible outside before the commit.
               assert {:ok, "x"} = Sealkv.get(store, "ns", "gone")
               {n, gone, new}
             end)

    assert {:ok, nil} = Sealkv.get(store, "ns", "gone")
    assert {:ok, "1"} = Sealkv.get(store, "counters", "n")
  end

  test "an exception inside the function discards its writes and releases the key",
       %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "t.sealkv"))

    assert_raise RuntimeError, "boom", fn ->
      Sealkv.transaction(store, "k", fn tx ->
        counter(tx)
        raise "boom"
      end)
    end

    catch_exit(Sealkv.transaction(store, "k", fn tx -> counter(tx) && exit(:bye) end))
    assert {:ok, nil} = Sealkv.get(store, "counters", "n")

    assert {:error, :changed_my_mind} =
             Sealkv.transaction(store, "k", fn tx ->
               counter(tx)
               Sealkv.rollback(tx, :changed_my_mind)
             end)

    assert {:ok, nil} = Sealkv.get(store, "counters", "n")
    assert {:ok, 1} = Sealkv.transaction(store, "k", &counter/1)
  end

  test "a process that dies inside a transaction releases its lock key, writing nothing",
       %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "t.sealkv"))
    parent = self()

    holder =
      spawn(fn ->
        Sealkv.transaction(store, "k", fn tx ->
          counter(tx)
          send(parent, :holding)
          Process.sleep(:infinity)
        end)
      end)

    assert_receive :holding, 5000
    waiter = Task.async(fn -> Sealkv.transaction(store, "k", &counter/1) end)
    refute Task.yield(waiter, 300), "the waiter got the key while the holder lived"
    Process.exit(holder, :kill)
    assert {:ok, 1} = Task.await(waiter, 10_000)
  end

  test "a transaction inside one with the same key joins it; another key is refused",
       %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "t.sealkv"))

    assert {:ok, {:ok, 2}} =
             Sealkv.transaction(store, "k", fn tx ->
               counter(tx)

               assert {:error, %Sealkv.Error{code: :nested_lock}} =
                        Sealkv.transaction(store, "other", &counter/1)

               Sealkv.transaction(store, "k", &counter/1)
             end)

    assert {:ok, "2"} = Sealkv.get(store, "counters", "n")

    # A rollback inside rolls back the whole, as in Ecto.
    assert {:error, :inner} =
             Sealkv.transaction(store, "k", fn tx ->
               counter(tx)
               Sealkv.transaction(store, "k", fn inner -> Sealkv.rollback(inner, :inner) end)
             end)

    assert {:ok, "2"} = Sealkv.get(store, "counters", "n")
  end

  test "an exception in a joined transaction rolls back the whole, even when rescued",
       %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "t.sealkv"))

    assert {:error, %Sealkv.Error{code: :rolled_back}} =
             Sealkv.transaction(store, "k", fn tx ->
               counter(tx)

               try do
                 Sealkv.transaction(store, "k", fn inner ->
                   counter(inner)
                   raise "inner"
                 end)
               rescue
                 RuntimeError -> :rescued
               end
             end)

    assert {:ok, nil} = Sealkv.get(store, "counters", "n")
    assert {:ok, 1} = Sealkv.transaction(store, "k", &counter/1)
  end

  test "waiting for a lock key held in this VM ends at lock_timeout", %{tmp_dir: dir} do
    path = Path.join(dir, "t.sealkv")
    {store, key} = new_store(path)
    :ok = Sealkv.close(store)
    {:ok, one} = Sealkv.open(path, key: key, lock_timeout: 300)
    {:ok, other} = Sealkv.open(path, key: key, lock_timeout: 300)
    parent = self()

    holder =
      spawn_link(fn ->
        Sealkv.transaction(one, "k", fn _ ->
          send(parent, :holding)
          receive do: (:release -> :ok)
        end)

        send(parent, :released)
      end)

    assert_receive :holding, 5000
    # Through the same handle (the handle's own lock table) and through another handle
    # of the file (the file's lock): both give up.
    for handle <- [one, other] do
      assert {:error, %Sealkv.Error{code: :lock_timeout}} =
               Sealkv.transaction(handle, "k", &counter/1)
    end

    send(holder, :release)
    assert_receive :released, 5000
    assert {:ok, 1} = Sealkv.transaction(one, "k", &counter/1)
  end

  test "a bad write inside a transaction fails where it is made", %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "t.sealkv"))

    assert {:ok, {:error, %Sealkv.Error{code: :invalid_name}}} =
             Sealkv.transaction(store, "k", fn tx -> Sealkv.put(tx, "ns", "", "v") end)
  end

  test "a transaction on a closed store is an error", %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "t.sealkv"))
    :ok = Sealkv.close(store)
    assert {:error, %Sealkv.Error{code: :closed}} = Sealkv.transaction(store, "k", &counter/1)
  end
end
