defmodule Sealkv.TestHelpers do
  @moduledoc false
  # Shared by the tests: keys, cheap key derivation, raw file scans.

  import ExUnit.Assertions

  @doc "A fresh random 32-byte master key."
  def key, do: :crypto.strong_rand_bytes(32)

  @doc "Options for a passphrase store with a cheap Argon2id (tests only)."
  def cheap(passphrase), do: [passphrase: passphrase, kdf: [memory_kib: 64, passes: 1, lanes: 1]]

  @doc "Asserts that none of `needles` appears in the file's raw bytes."
  def assert_no_plaintext(path, needles) do
    raw = File.read!(path)

    for needle <- needles do
      refute :binary.match(raw, needle) != :nomatch, "#{inspect(needle)} found in #{path}"
    end
  end

  @doc "The store at `path`, created with a random key: {store, key}."
  def new_store(path, opts \\ []) do
    key = key()
    {:ok, store} = Sealkv.create(path, [key: key] ++ opts)
    {store, key}
  end
end
