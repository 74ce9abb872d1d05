defmodule SealkvTest do
  use ExUnit.Case, async: true

  import Sealkv.TestHelpers

  @moduletag :tmp_dir

  test "values round-trip, in one atomic set, with deletes, lists and namespaces", %{tmp_dir: dir} do
    {store, key} = new_store(Path.join(dir, "a.sealkv"))
    binary = <<0, 255, 1, 254>> <> :crypto.strong_rand_bytes(3000)

    assert :ok = Sealkv.put(store, "session", "4915550001.0", binary)
    assert :ok = Sealkv.set(store, [{"pre-key", "1", "one"}, {"pre-key", "2", "two"}])
    assert :ok = Sealkv.set(store, %{"pre-key" => %{"1" => nil, "3" => "three"}})

    assert {:ok, ^binary} = Sealkv.get(store, "session", "4915550001.0")
    assert {:ok, nil} = Sealkv.get(store, "pre-key", "1")

    assert {:ok, %{"2" => "two", "3" => "three"}} =
             Sealkv.get_many(store, "pre-key", ["1", "2", "3", "9"])

    assert {:ok, ["2", "3"]} = Sealkv.list(store, "pre-key")
    assert {:ok, ["pre-key", "session"]} = Sealkv.namespaces(store)
    assert {:ok, true} = Sealkv.delete(store, "pre-key", "2")
    assert {:ok, false} = Sealkv.delete(store, "pre-key", "2")
    assert {:ok, []} = Sealkv.verify(store)
    assert {:ok, id} = Sealkv.rotate(store)
    assert is_integer(id)
    assert :ok = Sealkv.close(store)

    {:ok, store} = Sealkv.open(Path.join(dir, "a.sealkv"), key: key)
    assert {:ok, ^binary} = Sealkv.get(store, "session", "4915550001.0")
    assert {:ok, ["3"]} = Sealkv.list(store, "pre-key")
  end

  test "a batch with a bad change writes nothing", %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "a.sealkv"))

    assert {:error, %Sealkv.Error{code: :invalid_name}} =
             Sealkv.set(store, [{"ns", "good", "v"}, {"ns", "", "v"}])

    assert {:error, %Sealkv.Error{code: :invalid_argument}} =
             Sealkv.set(store, [{"ns", "good", "v"}, {"ns", "bad", 42}])

    assert {:error, %Sealkv.Error{code: :invalid_ttl}} =
             Sealkv.set(store, [{"ns", "good", "v"}, {"ns", "ttl", "v", 10}])

    assert {:ok, []} = Sealkv.namespaces(store)
  end

  test "a value with a time to live reads as absent after it", %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "a.sealkv"))
    assert :ok = Sealkv.put(store, "tctoken", "t", "v", ttl: 1000)
    assert {:ok, "v"} = Sealkv.get(store, "tctoken", "t")
    Process.sleep(2100)
    assert {:ok, nil} = Sealkv.get(store, "tctoken", "t")
  end

  test "sessions of one file keep their values apart", %{tmp_dir: dir} do
    path = Path.join(dir, "a.sealkv")
    {store, key} = new_store(path)
    bot1 = Sealkv.session(store, "bot1")
    assert :ok = Sealkv.put(bot1, "creds", "creds", "one")
    assert :ok = Sealkv.put(store, "creds", "creds", "default")
    {:ok, bot2} = Sealkv.open(path, key: key, session: "bot2")
    assert {:ok, nil} = Sealkv.get(bot2, "creds", "creds")
    assert {:ok, "one"} = Sealkv.get(Sealkv.session(bot2, "bot1"), "creds", "creds")
    assert {:ok, "default"} = Sealkv.get(store, "creds", "creds")
  end

  test "a wrong passphrase is refused and leaves the file byte-identical", %{tmp_dir: dir} do
    path = Path.join(dir, "p.sealkv")
    {:ok, store} = Sealkv.create(path, cheap("correct horse battery"))
    :ok = Sealkv.put(store, "ns", "k", "v")
    :ok = Sealkv.close(store)
    before = File.read!(path)

    assert {:error, %Sealkv.Error{code: :wrong_key} = err} =
             Sealkv.open(path, cheap("wrong horse battery"))

    refute inspect(err) =~ "horse"
    assert {:error, %Sealkv.Error{code: :key_kind}} = Sealkv.open(path, key: key())
    assert File.read!(path) == before
    assert {:ok, _} = Sealkv.open(path, cheap("correct horse battery"))
  end

  test "files that are not stores, and missing ones, get their own codes", %{tmp_dir: dir} do
    other = Path.join(dir, "notes.txt")
    File.write!(other, String.duplicate("not a database\n", 500))
    before = File.read!(other)
    assert {:error, %Sealkv.Error{code: :not_sealkv}} = Sealkv.open(other, key: key())
    assert File.read!(other) == before
    assert {:error, %Sealkv.Error{code: :io}} = Sealkv.open(Path.join(dir, "absent"), key: key())

    {_, _} = new_store(Path.join(dir, "x.sealkv"))

    assert {:error, %Sealkv.Error{code: :exists}} =
             Sealkv.create(Path.join(dir, "x.sealkv"), key: key())
  end

  test "bad arguments are errors that never quote the secret", %{tmp_dir: dir} do
    path = Path.join(dir, "a.sealkv")
    secret = "hunter2-passphrase-not-to-show"

    for opts <- [
          %{passphrase: secret},
          [{:passphrase, secret}, :oops],
          [passphrase: secret, read_only: true],
          [key: "short-#{secret}"],
          [passphrase: secret, key: key()],
          [],
          [passphrase: String.to_charlist(secret)],
          [passphrase: secret, concurrency: :sometimes],
          [passphrase: secret, kdf: [memory_kib: -1]],
          [passphrase: secret, bogus: 1]
        ] do
      assert {:error, %Sealkv.Error{code: code} = err} = Sealkv.create(path, opts)
      assert {:error, %Sealkv.Error{}} = Sealkv.open_or_create(path, opts)
      assert code in [:invalid_argument, :key], inspect(opts)
      refute inspect(err) =~ secret
      refute Exception.message(err) =~ secret
    end

    refute File.exists?(path)
    assert {:error, %Sealkv.Error{}} = Sealkv.open(path, %{passphrase: secret})
    {store, _} = new_store(path)
    refute inspect(store) =~ "key"
    bot = Sealkv.session(store, "4915550001")
    refute inspect(bot) =~ "4915550001"
    # A value given where it does not belong is an error, never an exception that
    # would carry it into a crash report.
    assert {:error, %Sealkv.Error{code: :invalid_argument}} =
             Sealkv.put({:ok, store}, "ns", "k", secret)

    assert {:error, %Sealkv.Error{code: :invalid_argument}} = Sealkv.put(store, "ns", "k", 42)
    assert {:error, %Sealkv.Error{code: :invalid_argument}} = Sealkv.set(store, %{"ns" => secret})

    assert {:error, %Sealkv.Error{code: :invalid_argument}} =
             Sealkv.put(store, "ns", "k", secret, :x)

    assert {:error, %Sealkv.Error{code: :invalid_argument}} = Sealkv.get(store, "ns", 42)

    assert {:error, %Sealkv.Error{code: :invalid_argument}} =
             Sealkv.get(%Sealkv{ref: make_ref()}, "ns", "k")
  end

  test "the file holds no name and no value in the clear", %{tmp_dir: dir} do
    path = Path.join(dir, "a.sealkv")
    {store, _} = new_store(path)
    jid = "4915550001@s.whatsapp.net"
    value = "the ratchet state of a very secret conversation"
    :ok = Sealkv.put(store, "session", jid, value)
    :ok = Sealkv.put(Sealkv.session(store, "bot-4915550002"), "sender-key", jid, value)
    :ok = Sealkv.close(store)
    assert_no_plaintext(path, [jid, "4915550001", value, "sender-key", "bot-4915550002"])
  end

  test "a closed store refuses calls; a handle lost to the garbage collector releases the file",
       %{tmp_dir: dir} do
    path = Path.join(dir, "x.sealkv")
    {store, key} = new_store(path, concurrency: :exclusive)
    assert {:error, %Sealkv.Error{code: :locked}} = Sealkv.open(path, key: key)
    :ok = Sealkv.close(store)
    assert {:error, %Sealkv.Error{code: :closed}} = Sealkv.get(store, "ns", "k")

    assert {:error, %Sealkv.Error{code: :closed}} =
             Sealkv.put(Sealkv.session(store, "s"), "ns", "k", "v")

    # Opened and dropped by a process that then waits idle (so it cannot collect its
    # garbage on its own): only a collection it is told to make can close the handle.
    parent = self()

    holder =
      spawn_link(fn ->
        {:ok, _} = Sealkv.open(path, key: key)
        send(parent, :opened)

        receive do
          :collect -> :erlang.garbage_collect()
        end

        send(parent, :collected)
        Process.sleep(:infinity)
      end)

    assert_receive :opened, 5000
    assert {:error, %Sealkv.Error{code: :locked}} = Sealkv.open(path, key: key)
    send(holder, :collect)
    assert_receive :collected, 5000
    # The VM runs resource destructors soon after the collection, not within it, and
    # the store is closed on a thread of its own.
    assert {:ok, _} = retry(fn -> Sealkv.open(path, key: key) end, 50)
  end

  test "sessions are listed, cleared and dropped; sweep, backup", %{tmp_dir: dir} do
    path = Path.join(dir, "a.sealkv")
    {store, key} = new_store(path)
    bot1 = Sealkv.session(store, "bot1")
    bot2 = Sealkv.session(store, "bot2")
    :ok = Sealkv.put(bot1, "ns", "k", "one")
    :ok = Sealkv.put(bot2, "ns", "k", "two")
    :ok = Sealkv.put(bot2, "ns", "short", "lived", ttl: 1000)
    assert {:ok, ["bot1", "bot2"]} = Sealkv.sessions(store)
    :ok = Sealkv.clear(bot1)
    assert {:ok, nil} = Sealkv.get(bot1, "ns", "k")
    assert {:ok, "two"} = Sealkv.get(bot2, "ns", "k")
    Process.sleep(2100)
    assert {:ok, 1} = Sealkv.sweep(store)

    copy = Path.join(dir, "copy.sealkv")
    assert :ok = Sealkv.backup(store, copy)
    assert {:error, %Sealkv.Error{code: :exists}} = Sealkv.backup(store, copy)
    assert {:ok, true} = Sealkv.drop_session(store, "bot2")
    assert {:ok, false} = Sealkv.drop_session(store, "bot2")
    assert {:ok, nil} = Sealkv.get(bot2, "ns", "k")
    {:ok, from_copy} = Sealkv.open(copy, key: key, session: "bot2")
    assert {:ok, "two"} = Sealkv.get(from_copy, "ns", "k")
  end

  test "read-only opens never write", %{tmp_dir: dir} do
    path = Path.join(dir, "a.sealkv")
    {store, key} = new_store(path)
    :ok = Sealkv.put(store, "ns", "k", "v")
    :ok = Sealkv.close(store)
    {:ok, ro} = Sealkv.open(path, key: key, read_only: true)
    assert {:ok, "v"} = Sealkv.get(ro, "ns", "k")
    assert {:error, %Sealkv.Error{code: :read_only}} = Sealkv.put(ro, "ns", "k", "w")
  end

  defp retry(f, 0), do: f.()

  defp retry(f, n) do
    case f.() do
      {:ok, _} = ok -> ok
      {:error, _} -> Process.sleep(100) && retry(f, n - 1)
    end
  end

  test "an older copy put back is refused with :older_copy until accept_restore/2",
       %{tmp_dir: dir} do
    path = Path.join(dir, "a.sealkv")
    {store, key} = new_store(path)
    assert :ok = Sealkv.set_anchor(store, Path.join(dir, "a.anchor"))
    assert :ok = Sealkv.put(store, "creds", "creds", "old")
    :ok = Sealkv.close(store)
    backup = File.read!(path)

    {:ok, store} = Sealkv.open(path, key: key)
    assert :ok = Sealkv.put(store, "creds", "creds", "new")
    :ok = Sealkv.close(store)
    newer = File.read!(path)

    File.write!(path, backup)

    assert {:error, %Sealkv.Error{code: :older_copy, message: message}} =
             Sealkv.open(path, key: key)

    assert message =~ "accept-restore"
    assert {:error, %Sealkv.Error{code: :older_copy}} = Sealkv.open(path, key: key, read_only: true)

    assert {:ok, store} = Sealkv.accept_restore(path, key: key)
    assert {:ok, 1} = Sealkv.restore_epoch(store)
    assert {:ok, "old"} = Sealkv.get(store, "creds", "creds")
    :ok = Sealkv.close(store)

    File.write!(path, newer)
    assert {:error, %Sealkv.Error{code: :older_copy}} = Sealkv.open(path, key: key)

    File.write!(path, backup)
    File.rm!(Path.join(dir, "a.anchor"))
    assert {:error, %Sealkv.Error{code: :anchor}} = Sealkv.open(path, key: key)
  end
end
