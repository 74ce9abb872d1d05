defmodule Sealkv.BaileysEx.PersistenceTest do
  # BaileysEx's own persistence tests (test/baileys_ex/auth/native_file_persistence_test,
  # persistence_contract_test and key_store_test's restart test), re-expressed against
  # this backend. BaileysEx itself cannot run here (it needs Elixir >= 1.19 and Hex),
  # so its State struct is stood in for by a map of the same shape.
  use ExUnit.Case, async: true

  import Sealkv.TestHelpers

  alias Sealkv.BaileysEx.Persistence

  @moduletag :tmp_dir

  defp key_pair(seed),
    do: %{
      public: :crypto.hash(:sha256, "pub#{seed}"),
      private: :crypto.hash(:sha256, "priv#{seed}")
    }

  # The fields of BaileysEx.Auth.State, with the kinds of values its tests give them.
  defp state(seed) do
    %{
      noise_key: key_pair(seed),
      pairing_ephemeral_key: key_pair(seed + 1),
      signed_identity_key: key_pair(seed + 2),
      signed_pre_key: %{
        key_pair: key_pair(seed + 4),
        key_id: seed + 3,
        signature: :binary.copy(<<seed>>, 64)
      },
      registration_id: seed + 1000,
      adv_secret_key: Base.encode64(:binary.copy(<<seed + 5>>, 32)),
      account: nil,
      me: %{id: "15551234567:1@s.whatsapp.net", lid: "12345:1@lid", name: "bot"},
      signal_identities: [],
      platform: "macOS",
      last_account_sync_timestamp: nil,
      processed_history_messages: [
        %{
          key: %{
            id: "3EB0",
            remote_jid: "15551234567@s.whatsapp.net",
            from_me: true,
            addressing_mode: :pn
          },
          message_timestamp: 1_710_000_000
        }
      ],
      account_sync_counter: 0,
      account_settings: %{unarchive_chats: false, default_disappearing_mode: nil},
      registered: false,
      pairing_code: "123-456",
      last_prop_hash: nil,
      routing_info: <<1, 2, 3, 4>>,
      my_app_state_key_id: nil,
      additional_data: %{labels: [:alpha, :beta], nested: %{token: <<5, 6, 7>>, status: {:ok, 42}}},
      first_unuploaded_pre_key_id: 1,
      next_pre_key_id: 1
    }
  end

  # A session record whose chains are keyed by a non-UTF-8 base key, as in BaileysEx's
  # "session records with non-UTF-8 binary keys" test.
  defp session_record do
    base_key = <<5>> <> :binary.copy(<<0xFF, 0xFE>>, 16)

    %{
      sessions: %{
        base_key => %{
          current_ratchet: %{root_key: <<1, 2>>},
          chains: %{sending: <<3>>, receiving: [<<4>>]}
        }
      }
    }
  end

  # One value of every key family BaileysEx.Signal.Store names.
  defp families do
    [
      {:session, "16268980123.0", session_record()},
      {:"pre-key", "1", key_pair(1)},
      {:"sender-key", "14156521415-1397622199@g.us::15550001111::0",
       %{sender_key_states: [%{id: 7, key: <<8>>}]}},
      {:"sender-key-memory", "1203630@g.us", %{"alice:0" => true}},
      {:"app-state-sync-key", "AAAAAD9A",
       %{key_data: :crypto.hash(:sha256, "app-state"), timestamp: 1_710_000_000}},
      {:"app-state-sync-version", "critical_block",
       %{
         version: 3,
         hash: :binary.copy(<<9>>, 128),
         index_value_map: %{"idx" => %{value_mac: <<1, 2, 3>>}}
       }},
      {:"lid-mapping", "5511999887766", "12345"},
      {:"lid-mapping", "12345_reverse", "5511999887766"},
      {:"device-list", "15551234567", ["0", "2"]},
      {:tctoken, "15551234567@s.whatsapp.net", %{token: <<9, 8, 7>>, timestamp: "1710000000"}},
      {:"identity-key", "alice.0", <<1, 2, 3>>}
    ]
  end

  test "with no credentials saved, load_credentials says so and writes nothing", %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "a.sealkv"))
    # BaileysEx's backends return BaileysEx.Auth.State.new/0 here; without BaileysEx
    # loaded there is nothing to make one from.
    refute Code.ensure_loaded?(BaileysEx.Auth.State)
    assert {:error, :not_found} = Persistence.load_credentials(store)
    assert {:ok, []} = Sealkv.namespaces(store)
  end

  test "credentials round-trip as BEAM terms, through a reopen", %{tmp_dir: dir} do
    path = Path.join(dir, "a.sealkv")
    {store, key} = new_store(path)
    state = state(150)
    assert :ok = Persistence.save_credentials(store, state)
    assert {:ok, ^state} = Persistence.load_credentials(store)
    updated = %{state | pairing_code: "ABC-123", additional_data: %{labels: [:native]}}
    assert :ok = Persistence.save_credentials(store, updated)
    :ok = Sealkv.close(store)

    {:ok, store} = Sealkv.open(path, key: key)
    assert {:ok, ^updated} = Persistence.load_credentials(store)
    assert {:ok, raw} = Sealkv.get(store, "creds", "creds")
    assert :erlang.binary_to_term(raw, [:safe]) == updated
  end

  test "every key family round-trips, is listed, and survives a reopen", %{tmp_dir: dir} do
    path = Path.join(dir, "a.sealkv")
    {store, key} = new_store(path)

    for {type, id, value} <- families(),
        do: assert(:ok = Persistence.save_keys(store, type, id, value))

    for {type, id, value} <- families(),
        do: assert({:ok, ^value} = Persistence.load_keys(store, type, id))

    assert {:ok, listed} = Persistence.list_persisted_keys(store)
    assert listed[:"lid-mapping"] == ["12345_reverse", "5511999887766"]
    assert listed[:"device-list"] == ["15551234567"]
    assert map_size(listed) == 10
    :ok = Sealkv.close(store)

    # key_store_test's "persists supported signal datasets across store restarts".
    {:ok, store} = Sealkv.open(path, key: key)

    for {type, id, value} <- families(),
        do: assert({:ok, ^value} = Persistence.load_keys(store, type, id))

    assert_no_plaintext(path, ["15551234567", "5511999887766", "1203630@g.us", "alice.0"])
  end

  test "deletes, missing ids, nil saves and integer ids", %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "a.sealkv"))
    assert {:error, :not_found} = Persistence.load_keys(store, :"device-list", "alice/device:0")

    assert :ok =
             Persistence.save_keys(store, :"device-list", "alice/device:0", ["primary", "companion"])

    assert {:ok, ["primary", "companion"]} =
             Persistence.load_keys(store, :"device-list", "alice/device:0")

    assert :ok = Persistence.delete_keys(store, :"device-list", "alice/device:0")
    assert {:error, :not_found} = Persistence.load_keys(store, :"device-list", "alice/device:0")
    # Deleting what is absent is :ok, as BaileysEx's backends do.
    assert :ok = Persistence.delete_keys(store, :"device-list", "alice/device:0")

    assert :ok = Persistence.save_keys(store, :"pre-key", 7, key_pair(7))
    assert {:ok, _} = Persistence.load_keys(store, :"pre-key", "7")
    assert :ok = Persistence.save_keys(store, :"pre-key", 7, nil)
    assert {:error, :not_found} = Persistence.load_keys(store, :"pre-key", 7)

    assert {:error, %Sealkv.Error{code: :invalid_argument}} =
             Persistence.save_keys(store, :session, {:not, "an id"}, <<1>>)

    assert {:error, %Sealkv.Error{code: :invalid_argument}} =
             Persistence.load_keys(store, "session", "1")
  end

  test "a stored value that does not decode is an error naming its family, creating no atom",
       %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "a.sealkv"))
    name = "sealkv_test_atom_never_created_#{System.unique_integer([:positive])}"
    # The external term format of that atom (SMALL_ATOM_UTF8_EXT), written as a value.
    unknown_atom = <<131, 119, byte_size(name)>> <> name
    :ok = Sealkv.put(store, "session", "1.0", unknown_atom)
    :ok = Sealkv.put(store, "pre-key", "1", "not a term at all")

    assert {:error, %Sealkv.Error{code: :undecodable, message: message}} =
             Persistence.load_keys(store, :session, "1.0")

    assert message =~ "session"
    assert_raise ArgumentError, fn -> String.to_existing_atom(name) end

    assert {:error, %Sealkv.Error{code: :undecodable, message: message}} =
             Persistence.load_keys(store, :"pre-key", "1")

    assert message =~ "pre-key"
    :ok = Sealkv.put(store, "creds", "creds", unknown_atom)
    assert {:error, %Sealkv.Error{code: :undecodable}} = Persistence.load_credentials(store)
  end

  test "set_keys writes a Signal.Store data set in one transaction", %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "a.sealkv"))
    pre_keys = Map.new(1..812, &{Integer.to_string(&1), key_pair(&1)})

    assert :ok =
             Persistence.set_keys(store, %{:"pre-key" => pre_keys, :session => %{"a.0" => <<1>>}})

    assert {:ok, ids} = Sealkv.list(store, "pre-key")
    assert length(ids) == 812

    assert :ok =
             Persistence.set_keys(store, %{
               :"pre-key" => %{"1" => nil},
               :session => %{"a.0" => <<2>>}
             })

    assert {:error, :not_found} = Persistence.load_keys(store, :"pre-key", "1")
    assert {:ok, <<2>>} = Persistence.load_keys(store, :session, "a.0")

    # A bad entry anywhere writes nothing.
    assert {:error, %Sealkv.Error{}} =
             Persistence.set_keys(store, %{
               :session => %{"a.0" => <<3>>},
               :"pre-key" => %{[] => <<1>>}
             })

    assert {:ok, <<2>>} = Persistence.load_keys(store, :session, "a.0")
  end

  # How BaileysEx.Auth.KeyStore picks a callback (key_store.ex, apply_persistence/4):
  # the context-aware arity when a context is configured and the module exports it,
  # else the context-free one.
  defp dispatch(module, context, fun, args) do
    Code.ensure_loaded(module)

    cond do
      context != nil and function_exported?(module, fun, length(args) + 1) ->
        apply(module, fun, [context | args])

      function_exported?(module, fun, length(args)) ->
        apply(module, fun, args)

      true ->
        {:error, {:unsupported_persistence_operation, module, fun}}
    end
  end

  test "KeyStore's dispatch reaches the context-aware callbacks, one store or session each",
       %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "a.sealkv"))
    bot1 = Sealkv.session(store, "bot1")
    bot2 = Sealkv.session(store, "bot2")
    # function_exported?/3 does not load a module (KeyStore loads it first too).
    Code.ensure_loaded!(Persistence)

    for {fun, arity} <- [
          load_credentials: 1,
          save_credentials: 2,
          load_keys: 3,
          save_keys: 4,
          delete_keys: 3
        ] do
      assert function_exported?(Persistence, fun, arity), "#{fun}/#{arity}"
      assert function_exported?(Persistence, fun, arity - 1), "#{fun}/#{arity - 1}"
    end

    assert :ok = dispatch(Persistence, bot1, :save_keys, [:session, "a.0", <<1>>])
    assert :ok = dispatch(Persistence, bot2, :save_keys, [:session, "a.0", <<2>>])
    assert {:ok, <<1>>} = dispatch(Persistence, bot1, :load_keys, [:session, "a.0"])
    assert {:ok, <<2>>} = dispatch(Persistence, bot2, :load_keys, [:session, "a.0"])
    assert {:error, :not_found} = dispatch(Persistence, store, :load_keys, [:session, "a.0"])
    assert :ok = dispatch(Persistence, bot1, :delete_keys, [:session, "a.0"])
    assert {:error, :not_found} = dispatch(Persistence, bot1, :load_keys, [:session, "a.0"])
    assert {:ok, <<2>>} = dispatch(Persistence, bot2, :load_keys, [:session, "a.0"])
  end

  test "a context that is not a store is an error that does not carry the data" do
    secret = %{noise_key: key_pair(99)}

    for result <- [
          Persistence.save_credentials({:ok, :not_a_store}, secret),
          Persistence.save_keys("bot.sealkv", :session, "a.0", secret),
          Persistence.set_keys(nil, %{session: %{"a.0" => secret}}),
          Persistence.load_keys(nil, :session, "a.0"),
          Persistence.load_credentials(:nope),
          Persistence.delete_keys(nil, :session, "a.0")
        ] do
      assert {:error, %Sealkv.Error{code: :invalid_argument}} = result
    end
  end

  test "the context-free callbacks use the store given to use_store/1", %{tmp_dir: dir} do
    {store, key} = new_store(Path.join(dir, "a.sealkv"))
    on_exit(fn -> :persistent_term.erase({Persistence, :store}) end)
    :persistent_term.erase({Persistence, :store})
    assert {:error, %Sealkv.Error{code: :invalid_argument}} = Persistence.load_keys(:session, "a.0")

    :ok = Persistence.use_store(store)
    assert :ok = Persistence.save_credentials(state(1))
    assert :ok = Persistence.save_keys(:session, "a.0", <<7>>)
    assert {:ok, <<7>>} = Persistence.load_keys(:session, "a.0")
    assert {:ok, %{registration_id: 1001}} = Persistence.load_credentials()
    assert :ok = Persistence.delete_keys(:session, "a.0")
    assert {:error, :not_found} = dispatch(Persistence, nil, :load_keys, [:session, "a.0"])

    {:ok, other} = Sealkv.open(Path.join(dir, "a.sealkv"), key: key)
    assert {:ok, %{registration_id: 1001}} = Persistence.load_credentials(other)
  end

  test "use_sealkv_auth_state gives BaileysEx's helper shape", %{tmp_dir: dir} do
    {store, _} = new_store(Path.join(dir, "a.sealkv"))
    :ok = Persistence.save_credentials(store, state(170))

    assert {:ok, %{state: state, connect_opts: opts, save_creds: save}} =
             Persistence.use_sealkv_auth_state(store)

    assert state == state(170)
    assert opts[:signal_store_module] == BaileysEx.Auth.KeyStore
    assert opts[:signal_store_opts] == [persistence_module: Persistence, persistence_context: store]
    assert :ok = save.(%{state | pairing_code: "ABC-123"})
    assert {:ok, %{pairing_code: "ABC-123"}} = Persistence.load_credentials(store)
  end
end
