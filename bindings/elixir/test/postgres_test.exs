defmodule Sealkv.PostgresTest do
  # The same calls against a store on PostgreSQL: a bot farm's persistence in a
  # database. Needs SEALKV_TEST_PG (scripts/test starts a server); skipped without it
  # unless SEALKV_REQUIRE_PG is set.
  use ExUnit.Case, async: true

  alias Sealkv.BaileysEx.Persistence

  @base System.get_env("SEALKV_TEST_PG")
  if @base == nil and System.get_env("SEALKV_REQUIRE_PG") in [nil, ""],
    do: @moduletag(skip: "no PostgreSQL (SEALKV_TEST_PG)")

  # A random store name: the server may hold stores of earlier runs (made with other
  # keys) when it is not a fresh one.
  defp url(name) do
    assert @base, "SEALKV_REQUIRE_PG is set but SEALKV_TEST_PG names no server"
    "#{@base}?store=elixir_#{Base.encode16(:crypto.strong_rand_bytes(6), case: :lower)}_#{name}"
  end

  test "two bots as sessions of one store, transactions and a reopen" do
    url = url("farm")
    key = :crypto.strong_rand_bytes(32)
    {:ok, store} = Sealkv.open_or_create(url, key: key)
    alice = Sealkv.session(store, "15550001111")
    bob = Sealkv.session(store, "15550002222")

    :ok =
      Persistence.save_credentials(alice, %{
        registration_id: 1,
        noise_key: %{public: <<1>>, private: <<2>>}
      })

    :ok = Persistence.save_keys(bob, :session, "15550001111.0", %{sessions: %{<<255>> => <<1>>}})

    1..8
    |> Task.async_stream(fn _ ->
      Sealkv.transaction(alice, "pre-key", fn tx ->
        {:ok, n} = Sealkv.get(tx, "counters", "next")
        :ok = Sealkv.put(tx, "counters", "next", Integer.to_string(String.to_integer(n || "0") + 1))
      end)
    end)
    |> Enum.each(fn {:ok, result} -> assert {:ok, :ok} = result end)

    :ok = Sealkv.close(store)
    {:ok, store} = Sealkv.open(url, key: key)

    assert {:ok, %{registration_id: 1}} =
             Persistence.load_credentials(Sealkv.session(store, "15550001111"))

    assert {:error, :not_found} = Persistence.load_credentials(Sealkv.session(store, "15550002222"))

    assert {:ok, %{sessions: %{<<255>> => <<1>>}}} =
             Persistence.load_keys(Sealkv.session(store, "15550002222"), :session, "15550001111.0")

    assert {:ok, "8"} = Sealkv.get(Sealkv.session(store, "15550001111"), "counters", "next")
    assert {:ok, []} = Sealkv.verify(store)

    assert {:error, %Sealkv.Error{code: :wrong_key}} =
             Sealkv.open(url, key: :crypto.strong_rand_bytes(32))
  end
end
