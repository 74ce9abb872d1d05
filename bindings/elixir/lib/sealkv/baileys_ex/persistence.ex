defmodule Sealkv.BaileysEx.Persistence do
  @moduledoc """
  A `BaileysEx.Auth.Persistence` backend: a BaileysEx bot's credentials and Signal
  keys in one sealed store instead of a folder of files.

      {:ok, store} = Sealkv.open_or_create("bot.sealkv", passphrase: passphrase)
      {:ok, auth} = Sealkv.BaileysEx.Persistence.use_sealkv_auth_state(store)
      BaileysEx.connect(auth.state, auth.connect_opts ++ [...])
      # on :creds_update
      auth.save_creds.(new_state)

  The persistence context is the store (`%Sealkv{}`, or one session of it from
  `Sealkv.session/2`, so one file holds many bots). `BaileysEx.Auth.KeyStore` passes it
  as the first argument of the context-aware callbacks (`load_keys/3`,
  `save_keys/4`, `delete_keys/3`, `load_credentials/1`, `save_credentials/2`). The
  context-free callbacks use the store given to `use_store/1`.

  Layout: each key family is a namespace named as BaileysEx names it (`"pre-key"`,
  `"session"`, `"sender-key"`, …), each id a key of it; the credentials are under
  namespace `"creds"`, key `"creds"`. Values are `:erlang.term_to_binary/1` of the
  term, read back with `:erlang.binary_to_term(bin, [:safe])`: a stored value that does
  not decode (an atom this VM does not know, a damaged term) is
  `{:error, %Sealkv.Error{code: :undecodable}}` naming the family, never a new atom or
  a crash.

  Each call is one atomic, durable write. `set_keys/2` writes a whole
  `BaileysEx.Signal.Store` data set (`%{family => %{id => value | nil}}`) in one
  transaction.
  """

  if Code.ensure_loaded?(BaileysEx.Auth.Persistence) do
    @behaviour BaileysEx.Auth.Persistence
  end

  @creds {"creds", "creds"}

  @typedoc "The persistence context: an open store or one session of it."
  @type context :: Sealkv.t()

  @doc """
  Makes `store` the one the context-free callbacks (`load_keys/2`, …) use in this VM.
  """
  @spec use_store(context()) :: :ok
  def use_store(%Sealkv{} = store), do: :persistent_term.put({__MODULE__, :store}, store)

  defp default_store do
    case :persistent_term.get({__MODULE__, :store}, nil) do
      nil ->
        {:error,
         Sealkv.Error.new(
           :invalid_argument,
           "no store for BaileysEx persistence: call Sealkv.BaileysEx.Persistence.use_store/1 " <>
             "or pass the store as :persistence_context"
         )}

      store ->
        {:ok, store}
    end
  end

  @doc """
  The helper map BaileysEx's own `use_native_file_auth_state/1` returns, for `store`:
  `state` (the saved credentials, or fresh ones from `BaileysEx.Auth.State.new/0`),
  `connect_opts` (the KeyStore over this backend, with the store as its context) and
  `save_creds` (saves a state).
  """
  @spec use_sealkv_auth_state(context()) :: {:ok, map()} | {:error, term()}
  def use_sealkv_auth_state(%Sealkv{} = store) do
    with {:ok, state} <- load_credentials(store) do
      {:ok,
       %{
         state: state,
         connect_opts: [
           signal_store_module: BaileysEx.Auth.KeyStore,
           signal_store_opts: [persistence_module: __MODULE__, persistence_context: store]
         ],
         save_creds: &save_credentials(store, &1)
       }}
    end
  end

  def use_sealkv_auth_state(_), do: not_a_store()

  @doc "The credentials of the store given to `use_store/1`."
  @spec load_credentials() :: {:ok, term()} | {:error, term()}
  def load_credentials do
    with {:ok, store} <- default_store(), do: load_credentials(store)
  end

  @doc """
  The saved credentials. When none are saved: fresh ones from
  `BaileysEx.Auth.State.new/0` (not saved, as BaileysEx's file backends do), or
  `{:error, :not_found}` in a VM without BaileysEx.
  """
  @spec load_credentials(context()) :: {:ok, term()} | {:error, term()}
  def load_credentials(%Sealkv{} = store) do
    {ns, key} = @creds

    case Sealkv.get(store, ns, key) do
      {:ok, nil} -> fresh_state()
      {:ok, bin} -> decode(bin, "creds")
      {:error, _} = error -> error
    end
  end

  def load_credentials(_), do: not_a_store()

  defp fresh_state do
    state = BaileysEx.Auth.State

    if Code.ensure_loaded?(state) and function_exported?(state, :new, 0),
      do: {:ok, apply(state, :new, [])},
      else: {:error, :not_found}
  end

  @doc "Saves credentials into the store given to `use_store/1`."
  @spec save_credentials(term()) :: :ok | {:error, term()}
  def save_credentials(state) do
    with {:ok, store} <- default_store(), do: save_credentials(store, state)
  end

  @doc "Saves the credentials (a `BaileysEx.Auth.State`, or any term) durably."
  @spec save_credentials(context(), term()) :: :ok | {:error, term()}
  def save_credentials(%Sealkv{} = store, state) do
    {ns, key} = @creds
    Sealkv.put(store, ns, key, :erlang.term_to_binary(state))
  end

  def save_credentials(_, _), do: not_a_store()

  @doc "One key of the store given to `use_store/1`."
  @spec load_keys(atom(), term()) :: {:ok, term()} | {:error, term()}
  def load_keys(type, id) do
    with {:ok, store} <- default_store(), do: load_keys(store, type, id)
  end

  @doc "The value of family `type`, id `id`: `{:ok, value}`, or `{:error, :not_found}`."
  @spec load_keys(context(), atom(), term()) :: {:ok, term()} | {:error, term()}
  def load_keys(%Sealkv{} = store, type, id) do
    with {:ok, ns, key} <- name(type, id) do
      case Sealkv.get(store, ns, key) do
        {:ok, nil} -> {:error, :not_found}
        {:ok, bin} -> decode(bin, ns)
        {:error, _} = error -> error
      end
    end
  end

  def load_keys(_, _, _), do: not_a_store()

  @doc "Saves one key into the store given to `use_store/1`."
  @spec save_keys(atom(), term(), term()) :: :ok | {:error, term()}
  def save_keys(type, id, data) do
    with {:ok, store} <- default_store(), do: save_keys(store, type, id, data)
  end

  @doc """
  Saves the value of family `type`, id `id`, durably (`nil` deletes it: BaileysEx's
  file backends read a saved `nil` back as `:not_found` too).
  """
  @spec save_keys(context(), atom(), term(), term()) :: :ok | {:error, term()}
  def save_keys(%Sealkv{} = store, type, id, data) do
    with {:ok, ns, key} <- name(type, id), do: Sealkv.set(store, [{ns, key, encode(data)}])
  end

  def save_keys(_, _, _, _), do: not_a_store()

  @doc "Deletes one key from the store given to `use_store/1`."
  @spec delete_keys(atom(), term()) :: :ok | {:error, term()}
  def delete_keys(type, id) do
    with {:ok, store} <- default_store(), do: delete_keys(store, type, id)
  end

  @doc "Deletes the value of family `type`, id `id` (`:ok` when it was absent too)."
  @spec delete_keys(context(), atom(), term()) :: :ok | {:error, term()}
  def delete_keys(%Sealkv{} = store, type, id) do
    with {:ok, ns, key} <- name(type, id), do: Sealkv.set(store, [{ns, key, nil}])
  end

  def delete_keys(_, _, _), do: not_a_store()

  @doc """
  Writes a `BaileysEx.Signal.Store` data set, `%{family => %{id => value | nil}}`
  (`nil` deletes), in one atomic, durable transaction.
  """
  @spec set_keys(context(), %{atom() => %{term() => term()}}) :: :ok | {:error, term()}
  def set_keys(%Sealkv{} = store, data) when is_map(data) do
    with {:ok, changes} <- changes_of(data), do: Sealkv.set(store, changes)
  end

  def set_keys(_, _), do: not_a_store()

  @doc """
  The ids saved under each family (`:creds` excluded): `{:ok, %{family => [id]}}`, as
  BaileysEx's `list_persisted_keys/1`. Families are the namespaces of the store, so
  their atoms exist already whenever BaileysEx is loaded; a namespace whose atom this
  VM does not know is listed under its string name.
  """
  @spec list_persisted_keys(context()) ::
          {:ok, %{(atom() | String.t()) => [String.t()]}} | {:error, term()}
  def list_persisted_keys(%Sealkv{} = store) do
    {creds, _} = @creds

    with {:ok, namespaces} <- Sealkv.namespaces(store) do
      Enum.reduce_while(namespaces -- [creds], {:ok, %{}}, fn ns, {:ok, acc} ->
        case Sealkv.list(store, ns) do
          {:ok, ids} -> {:cont, {:ok, Map.put(acc, family(ns), ids)}}
          {:error, _} = error -> {:halt, error}
        end
      end)
    end
  end

  def list_persisted_keys(_), do: not_a_store()

  defp family(ns) do
    String.to_existing_atom(ns)
  rescue
    ArgumentError -> ns
  end

  # A context that is not a store: an error, not a FunctionClauseError (whose report
  # would show the credentials or keys given).
  defp not_a_store,
    do:
      {:error,
       Sealkv.Error.new(:invalid_argument, "the persistence context must be a %Sealkv{} store")}

  defp changes_of(data) do
    if Enum.all?(data, fn {_, entries} -> is_map(entries) end) do
      for({type, entries} <- data, {id, value} <- entries, do: {type, id, value})
      |> Enum.reduce_while({:ok, []}, fn {type, id, value}, {:ok, acc} ->
        case name(type, id) do
          {:ok, ns, key} -> {:cont, {:ok, [{ns, key, encode(value)} | acc]}}
          {:error, _} = error -> {:halt, error}
        end
      end)
      |> then(fn
        {:ok, changes} -> {:ok, Enum.reverse(changes)}
        error -> error
      end)
    else
      {:error, Sealkv.Error.new(:invalid_argument, "a data set is %{family => %{id => value}}")}
    end
  end

  defp encode(nil), do: nil
  defp encode(term), do: :erlang.term_to_binary(term)

  defp decode(bin, family) do
    {:ok, :erlang.binary_to_term(bin, [:safe])}
  rescue
    ArgumentError ->
      # In interactive mode (iex -S mix) modules load when first called, and with them
      # the atoms of their structs' fields: load BaileysEx's and try once more.
      if load_baileys_ex(),
        do: decode_loaded(bin, family),
        else: undecodable(family)
  end

  defp decode_loaded(bin, family) do
    {:ok, :erlang.binary_to_term(bin, [:safe])}
  rescue
    ArgumentError -> undecodable(family)
  end

  # Whether loading BaileysEx's modules made anything new loaded.
  defp load_baileys_ex do
    case Application.spec(:baileys_ex, :modules) do
      nil ->
        false

      modules ->
        unloaded = Enum.reject(modules, &:erlang.module_loaded/1)
        unloaded != [] and :code.ensure_modules_loaded(unloaded) == :ok
    end
  end

  defp undecodable(family) do
    {:error,
     Sealkv.Error.new(
       :undecodable,
       "a stored #{family} value does not decode as an Erlang term here (an atom this " <>
         "VM does not know, or a damaged term); nothing was created"
     )}
  end

  # Ids are strings in BaileysEx; integers (pre-key ids) are accepted as their decimal
  # form. Errors name neither the family's value nor the id (a JID is personal data).
  defp name(type, id) when is_atom(type) and (is_binary(id) or is_integer(id)),
    do: {:ok, Atom.to_string(type), to_string(id)}

  defp name(type, _) when is_atom(type),
    do: {:error, Sealkv.Error.new(:invalid_argument, "a #{type} id must be a string or an integer")}

  defp name(_, _), do: {:error, Sealkv.Error.new(:invalid_argument, "a key family must be an atom")}
end
