defmodule Sealkv do
  @moduledoc """
  An encrypted embedded key-value store in one file (or a PostgreSQL database), from
  Elixir: the `sealkv` Rust library through a NIF.

  Values are binaries under a namespace and a key. They are compressed, sealed with
  XChaCha20-Poly1305 (or AES-256-GCM) under data keys that rotate, wrapped by a
  master key: a raw 32-byte key or one derived from a passphrase with Argon2id. Names
  are stored only as keyed tags. Every write is one atomic, durable transaction.

      {:ok, store} = Sealkv.create("bot.sealkv", passphrase: "correct horse battery")
      :ok = Sealkv.set(store, [{"creds", "creds", "..."}, {"session", "4915550001.0", "..."}])
      {:ok, "..."} = Sealkv.get(store, "session", "4915550001.0")
      :ok = Sealkv.close(store)

  Calls that touch the disk, the server or the key derivation run on dirty
  schedulers, so they never hold up the VM's normal schedulers. Errors are
  `{:error, %Sealkv.Error{code: atom}}`; no message or `inspect` output ever contains
  a key, a passphrase or a value.

  A store handle is closed by `close/1`, or when the last term referring to it is
  garbage-collected.
  """

  alias Sealkv.{Error, Native, Tx}

  # The session id may be a phone number: kept out of inspect output and logs, as the
  # Rust library's Debug output keeps it out.
  @derive {Inspect, except: [:session]}
  @enforce_keys [:ref]
  defstruct [:ref, session: nil]

  @typedoc "An open store (or one session of it: see `session/2`)."
  @type t :: %__MODULE__{ref: reference(), session: String.t() | nil}

  @typedoc "A store, or a transaction of one (inside `transaction/3`)."
  @type target :: t() | Tx.t()

  @typedoc "A change of `set/2`: a put, a put with a time to live in ms, or a delete (`nil`)."
  @type change ::
          {namespace :: String.t(), key :: String.t(), binary() | nil}
          | {namespace :: String.t(), key :: String.t(), binary(), ttl_ms :: pos_integer()}

  @typedoc """
  Options of `open/2`, `create/2` and `open_or_create/2`. Exactly one of
  `:passphrase` (a string) or `:key` (a 32-byte binary) is required.

  - `:session` — the session to read and write (one file, many bots).
  - `:concurrency` — `:shared` (default: several processes may open the file; the
    first owns it and serves the others), `:exclusive` (one process) or
    `:multi_writer` (every process writes the file itself). Recorded at creation.
  - `:kdf` — Argon2id cost of a new passphrase store: `[memory_kib: 65536, passes: 3,
    lanes: 1]` by default.
  - `:read_only` — open without ever writing.
  - `:lock_timeout` — ms a transaction waits for its lock key (default 30000).
  - `:sync_replicas`, `:failover_timeout` (ms) — PostgreSQL high availability.
  """
  @type option ::
          {:passphrase, String.t()}
          | {:key, <<_::256>>}
          | {:session, String.t()}
          | {:concurrency, :shared | :exclusive | :multi_writer}
          | {:kdf, keyword()}
          | {:read_only, boolean()}
          | {:lock_timeout, non_neg_integer()}
          | {:sync_replicas, non_neg_integer()}
          | {:failover_timeout, non_neg_integer()}

  @type result(value) :: {:ok, value} | {:error, Error.t()}

  @doc "Opens an existing store: a file path, or a `postgres://…?store=NAME` URL."
  @spec open(Path.t(), [option()]) :: result(t())
  def open(path, opts) do
    mode = if Keyword.keyword?(opts) and opts[:read_only] == true, do: :read_only, else: :open
    open_in(path, mode, opts)
  end

  @doc "Creates a new store; `{:error, %Sealkv.Error{code: :exists}}` when it exists."
  @spec create(Path.t(), [option()]) :: result(t())
  def create(path, opts), do: open_in(path, :create, opts)

  @doc """
  Opens the store, creating it when it does not exist (a create that loses a race
  with another process's opens the store that process made).
  """
  @spec open_or_create(Path.t(), [option()]) :: result(t())
  def open_or_create(path, opts), do: open_in(path, :open_or_create, opts)

  @doc """
  Opens a store its anchor says is an older copy (every other open gives
  `{:error, %Sealkv.Error{code: :older_copy}}`), or whose anchor is gone (`:anchor`),
  and accepts it as current: its restore epoch advances and the anchor is written from
  it, so the copy that was current before the restore is refused from now on. Use it
  only when the restore was meant, then start over what a restore breaks (re-pair).
  """
  @spec accept_restore(Path.t(), [option()]) :: result(t())
  def accept_restore(path, opts), do: open_in(path, :accept_restore, opts)

  defp open_in(path, mode, opts) do
    with :ok <- check(is_binary(path), "the path must be a string"),
         :ok <- check(Keyword.keyword?(opts), "options must be a keyword list"),
         :ok <-
           check(
             mode in [:open, :read_only] or opts[:read_only] in [nil, false],
             "read_only applies to open/2 only"
           ),
         {:ok, secret} <- secret(opts),
         {:ok, options} <- native_options(opts),
         {:ok, session} <- session_opt(opts),
         {:ok, ref} <- call(native_open(path, mode, secret, options)) do
      {:ok, %__MODULE__{ref: ref, session: session}}
    end
  end

  # A server's store is opened on a dirty I/O scheduler (network round trips, and
  # retries while it fails over); a file's on a dirty CPU one (Argon2id).
  defp native_open("postgres://" <> _ = url, mode, secret, options),
    do: Native.open_remote(url, mode, secret, options)

  defp native_open("postgresql://" <> _ = url, mode, secret, options),
    do: Native.open_remote(url, mode, secret, options)

  defp native_open(path, mode, secret, options), do: Native.open(path, mode, secret, options)

  # Errors name the option, never its value (it may be the secret).
  defp secret(opts) do
    case {Keyword.fetch(opts, :passphrase), Keyword.fetch(opts, :key)} do
      {{:ok, p}, :error} when is_binary(p) -> {:ok, {:passphrase, p}}
      {:error, {:ok, k}} when is_binary(k) -> {:ok, {:key, k}}
      {{:ok, _}, :error} -> invalid("the passphrase must be a string")
      {:error, {:ok, _}} -> invalid("the key must be a 32-byte binary")
      _ -> invalid("give exactly one of `passphrase:` or `key:`")
    end
  end

  @known [:passphrase, :key, :session, :concurrency, :kdf, :read_only, :lock_timeout] ++
           [:sync_replicas, :failover_timeout]

  defp native_options(opts) do
    Enum.reduce_while(opts, {:ok, %{}}, fn {name, value}, {:ok, acc} ->
      case native_option(name, value) do
        {:ok, pairs} -> {:cont, {:ok, Map.merge(acc, Map.new(pairs))}}
        {:error, _} = error -> {:halt, error}
      end
    end)
  end

  defp native_option(:concurrency, mode) when mode in [:shared, :exclusive, :multi_writer],
    do: {:ok, concurrency: mode}

  defp native_option(:concurrency, _), do: invalid("concurrency must be :shared or :exclusive")

  defp native_option(:kdf, kdf) when is_list(kdf) do
    names = [memory_kib: :kdf_memory_kib, passes: :kdf_passes, lanes: :kdf_lanes]

    Enum.reduce_while(kdf, {:ok, []}, fn {name, value}, {:ok, acc} ->
      case Keyword.fetch(names, name) do
        {:ok, native} when is_integer(value) and value > 0 ->
          {:cont, {:ok, [{native, value} | acc]}}

        _ ->
          {:halt, invalid("kdf takes memory_kib, passes and lanes, positive integers")}
      end
    end)
  end

  defp native_option(:kdf, _), do: invalid("kdf must be a keyword list")

  defp native_option(name, ms) when name in [:lock_timeout, :failover_timeout] do
    if is_integer(ms) and ms >= 0,
      do: {:ok, [{:"#{name}_ms", ms}]},
      else: invalid("#{name} must be a number of milliseconds")
  end

  defp native_option(:sync_replicas, n) when is_integer(n) and n >= 0,
    do: {:ok, sync_replicas: n}

  defp native_option(:sync_replicas, _), do: invalid("sync_replicas must be an integer >= 0")
  defp native_option(:read_only, flag) when is_boolean(flag), do: {:ok, []}
  defp native_option(:read_only, _), do: invalid("read_only must be a boolean")

  defp native_option(name, _) when name in @known, do: {:ok, []}

  defp native_option(name, _) when is_atom(name),
    do: invalid("unknown option #{inspect(name)}")

  defp native_option(_, _), do: invalid("options must be a keyword list")

  defp session_opt(opts) do
    case Keyword.get(opts, :session) do
      nil -> {:ok, nil}
      id when is_binary(id) -> {:ok, id}
      _ -> invalid("the session must be a string")
    end
  end

  @doc """
  A view of session `id` of the same open store: one file, many bots. Each session's
  names and values are apart from every other's.
  """
  @spec session(t(), String.t()) :: t()
  def session(%__MODULE__{} = store, id) when is_binary(id), do: %{store | session: id}

  @doc "The value of `key` in `namespace`, or `nil` when absent."
  @spec get(target(), String.t(), String.t()) :: result(binary() | nil)
  def get(target, namespace, key) do
    with {:ok, [value]} <- fetch(target, namespace, [key]), do: {:ok, value}
  end

  @doc "The values of `keys` in `namespace` that exist, as a map (absent keys are left out)."
  @spec get_many(target(), String.t(), [String.t()]) :: result(%{String.t() => binary()})
  def get_many(target, namespace, keys) when is_list(keys) do
    with {:ok, values} <- fetch(target, namespace, keys) do
      {:ok,
       keys
       |> Enum.zip(values)
       |> Enum.reject(fn {_, v} -> is_nil(v) end)
       |> Map.new()}
    end
  end

  defp fetch(%__MODULE__{ref: ref, session: s}, namespace, keys),
    do: call(Native.get(ref, s, namespace, keys))

  defp fetch(%Tx{ref: ref}, namespace, keys), do: call(Native.tx_get(ref, namespace, keys))

  @doc """
  Stores `value` under `namespace` and `key`, durably. `ttl:` (ms, whole seconds, at
  least 1000) makes it read as absent after that long.
  """
  @spec put(target(), String.t(), String.t(), binary(), keyword()) :: :ok | {:error, Error.t()}
  def put(target, namespace, key, value, opts \\ []) do
    case Keyword.keyword?(opts) && Keyword.get(opts, :ttl) do
      false -> invalid("options must be a keyword list")
      nil -> set(target, [{namespace, key, value}])
      ms -> set(target, [{namespace, key, value, ms}])
    end
  end

  @doc """
  Deletes one value. On a store: `{:ok, existed?}`; in a transaction the delete is
  buffered and `:ok` is returned.
  """
  @spec delete(target(), String.t(), String.t()) :: {:ok, boolean()} | :ok | {:error, Error.t()}
  def delete(%__MODULE__{ref: ref, session: s}, namespace, key),
    do: call(Native.delete(ref, s, namespace, key))

  def delete(%Tx{} = tx, namespace, key), do: set(tx, [{namespace, key, nil}])

  @doc """
  Applies puts and deletes in one atomic, durable transaction: every change or none.
  `changes` is a list of `t:change/0`, or a map `%{namespace => %{key => value | nil}}`.
  In a transaction, the changes are buffered until it commits.
  """
  @spec set(target(), [change()] | %{String.t() => %{String.t() => binary() | nil}}) ::
          :ok | {:error, Error.t()}
  def set(target, changes) when is_map(changes) do
    if Enum.all?(changes, fn {_, entries} -> is_map(entries) end),
      do: set(target, for({ns, e} <- changes, {key, value} <- e, do: {ns, key, value})),
      else: invalid("changes must be %{namespace => %{key => value | nil}}")
  end

  def set(%__MODULE__{ref: ref, session: s}, changes) when is_list(changes) do
    with :ok <- check_ttls(changes), do: ok(Native.set(ref, s, changes))
  end

  def set(%Tx{ref: ref}, changes) when is_list(changes) do
    with :ok <- check_ttls(changes), do: ok(Native.tx_set(ref, changes))
  end

  # Anything else: an error, not a FunctionClauseError (whose report would show the
  # values).
  def set(_target, _changes), do: invalid("set/2 takes a store or transaction and changes")

  # As the Rust library takes them: whole seconds, at least one (ms below are cut).
  defp check_ttls(changes) do
    if Enum.all?(changes, fn
         {_, _, _, ms} -> is_integer(ms) and ms >= 1000
         _ -> true
       end),
       do: :ok,
       else: {:error, Error.new(:invalid_ttl, "a time to live must be at least 1000 ms")}
  end

  @doc "The keys of `namespace`, sorted."
  @spec list(t(), String.t()) :: result([String.t()])
  def list(%__MODULE__{ref: ref, session: s}, namespace), do: call(Native.list(ref, s, namespace))

  @doc "The namespaces that hold values, sorted."
  @spec namespaces(t()) :: result([String.t()])
  def namespaces(%__MODULE__{ref: ref, session: s}), do: call(Native.namespaces(ref, s))

  @doc "The named sessions of the store that hold values, sorted."
  @spec sessions(t()) :: result([String.t()])
  def sessions(%__MODULE__{ref: ref}), do: call(Native.sessions(ref))

  @doc "Deletes session `id` and all its values in one transaction; `{:ok, had_any?}`."
  @spec drop_session(t(), String.t()) :: result(boolean())
  def drop_session(%__MODULE__{ref: ref}, id), do: call(Native.drop_session(ref, id))

  @doc "Deletes every value of this handle's session (the default one unless `session/2`)."
  @spec clear(t()) :: :ok | {:error, Error.t()}
  def clear(%__MODULE__{ref: ref, session: s}), do: ok(Native.clear(ref, s))

  @doc "Removes expired values now (reads hide them already); `{:ok, count}`."
  @spec sweep(t()) :: result(non_neg_integer())
  def sweep(%__MODULE__{ref: ref}), do: call(Native.sweep(ref))

  @doc "Writes a consistent copy of the store to `dest` (a new file, or a URL), online."
  @spec backup(t(), Path.t()) :: :ok | {:error, Error.t()}
  def backup(%__MODULE__{ref: ref}, dest) when is_binary(dest), do: ok(Native.backup(ref, dest))

  @doc """
  Anchors the store against rollback at `location` (a file path, `"keychain:SERVICE"`,
  or a `postgres://` URL without a password), or removes its anchor (`nil`). Every
  later open, from any program, refuses an older copy with `:older_copy`.
  """
  @spec set_anchor(t(), String.t() | nil) :: :ok | {:error, Error.t()}
  def set_anchor(%__MODULE__{ref: ref}, nil), do: ok(Native.set_anchor(ref, nil))

  def set_anchor(%__MODULE__{ref: ref}, location) when is_binary(location),
    do: ok(Native.set_anchor(ref, location))

  @doc "How many restores were accepted (`accept_restore/2`); `{:ok, n}`."
  @spec restore_epoch(t()) :: result(non_neg_integer())
  def restore_epoch(%__MODULE__{ref: ref}), do: call(Native.restore_epoch(ref))

  @doc "Makes a new primary data key (older ones still open older values); `{:ok, id}`."
  @spec rotate(t()) :: result(non_neg_integer())
  def rotate(%__MODULE__{ref: ref}), do: call(Native.rotate(ref))

  @doc """
  Opens every value and checks the store. `{:ok, []}` when all is well, or the
  problems found, each a `Sealkv.Error`.
  """
  @spec verify(t()) :: result([Error.t()])
  def verify(%__MODULE__{ref: ref}) do
    with {:ok, problems} <- call(Native.verify(ref)), do: {:ok, Enum.map(problems, &Error.from/1)}
  end

  @doc """
  Closes the store: later calls on this handle (and its sessions) return
  `%Sealkv.Error{code: :closed}`. Calls already running finish first.
  """
  @spec close(t()) :: :ok
  def close(%__MODULE__{ref: ref}) do
    {:ok, :ok} = Native.close(ref)
    :ok
  end

  @doc """
  Runs `fun` exclusively for `lock_key` and commits its writes atomically.

  `fun` gets a `Sealkv.Tx`: reads through it see its own writes; its writes are
  buffered and committed in one durable transaction when `fun` returns, and the result
  is `{:ok, fun's value}`. Other Elixir processes, and other OS processes sharing the
  file, that take the same lock key wait for it (different keys run concurrently);
  `lock_timeout:` at open bounds the wait.

  If `fun` raises, throws or exits, nothing is written and the exception goes on.
  `rollback/2` ends it without writing, and the result is `{:error, reason}`; a failed
  commit returns `{:error, %Sealkv.Error{}}`.

  Called inside a transaction of the same store by the same process, with the same
  lock key, it joins the outer one (as `Ecto.Repo.transaction/2` does): a rollback or
  an exception inside rolls back the whole, even if the outer function rescues it
  (the outer call then returns `{:error, %Sealkv.Error{code: :rolled_back}}`). With
  another lock key it returns `{:error, %Sealkv.Error{code: :nested_lock}}` (taking a
  second key while holding one deadlocks against a process that takes them in the
  other order).

  Only calls given the `Sealkv.Tx` are part of the transaction: `Sealkv.put(store, …)`
  inside `fun` writes at once, outside it.
  """
  @spec transaction(t(), String.t(), (Tx.t() -> value)) :: {:ok, value} | {:error, term()}
        when value: term()
  def transaction(%__MODULE__{} = store, lock_key, fun)
      when is_binary(lock_key) and is_function(fun, 1) do
    case Process.get({__MODULE__, :tx, store.ref}) do
      nil ->
        run_transaction(store, lock_key, fun)

      %Tx{lock_key: ^lock_key, store: %{session: session}} = tx when session == store.session ->
        joined(tx, fun)

      %Tx{} ->
        {:error,
         Error.new(
           :nested_lock,
           "a transaction was begun inside another of the same store with another lock key"
         )}
    end
  end

  # Runs an inner transaction's function in the outer one; if it fails in any way, the
  # outer one can no longer commit.
  defp joined(%Tx{ref: ref} = tx, fun) do
    {:ok, fun.(tx)}
  catch
    kind, reason ->
      Process.put({__MODULE__, :rollback_only, ref}, true)
      :erlang.raise(kind, reason, __STACKTRACE__)
  end

  defp run_transaction(store, lock_key, fun) do
    tag = make_ref()

    with {:ok, ref} <- call(Native.tx_begin(store.ref, store.session, lock_key, tag)),
         :ok <- held(tag) do
      tx = %Tx{ref: ref, store: store, lock_key: lock_key}
      Process.put({__MODULE__, :tx, store.ref}, tx)

      try do
        value = fun.(tx)

        if Process.delete({__MODULE__, :rollback_only, ref}) do
          Native.tx_abort(ref)

          {:error,
           Error.new(:rolled_back, "a transaction joined to this one failed; nothing was written")}
        else
          case call(Native.tx_commit(ref)) do
            {:ok, :ok} -> {:ok, value}
            {:error, _} = error -> error
          end
        end
      catch
        :throw, {__MODULE__, :rollback, ^ref, reason} ->
          Native.tx_abort(ref)
          {:error, reason}

        kind, reason ->
          Native.tx_abort(ref)
          :erlang.raise(kind, reason, __STACKTRACE__)
      after
        Process.delete({__MODULE__, :tx, store.ref})
        Process.delete({__MODULE__, :rollback_only, ref})
      end
    end
  end

  # The transaction's thread tells once it holds the lock key (or why it cannot).
  defp held(tag) do
    receive do
      {:sealkv_tx, ^tag, :ok} -> :ok
      {:sealkv_tx, ^tag, {:error, reason}} -> {:error, Error.from(reason)}
    end
  end

  @doc """
  Ends the transaction `tx` without writing anything; `transaction/3` returns
  `{:error, reason}`. Does not return.
  """
  @spec rollback(Tx.t(), term()) :: no_return()
  def rollback(%Tx{ref: ref}, reason), do: throw({__MODULE__, :rollback, ref, reason})

  defp call({:ok, value}), do: {:ok, value}
  defp call({:error, reason}), do: {:error, Error.from(reason)}

  defp ok({:ok, :ok}), do: :ok
  defp ok({:error, reason}), do: {:error, Error.from(reason)}

  defp check(true, _), do: :ok
  defp check(false, message), do: invalid(message)

  defp invalid(message), do: {:error, Error.new(:invalid_argument, message)}
end
