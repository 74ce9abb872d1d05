defmodule Sealkv.Native do
  # The NIF (native/sealkv_nif), loaded from priv/ when this module loads. Every
  # function returns {:ok, value} or {:error, {code, message}}; Sealkv wraps them.
  @moduledoc false

  @on_load :load_nif

  @doc false
  def load_nif do
    path = :filename.join(:code.priv_dir(:sealkv), ~c"libsealkv_nif")

    case :erlang.load_nif(path, 0) do
      :ok ->
        :ok

      {:error, {reason, text}} ->
        IO.warn(
          "sealkv: cannot load its NIF from #{path}.so (#{reason}: #{text}); " <>
            "build it with `mix compile` in bindings/elixir"
        )

        {:error, reason}
    end
  end

  def open(_path, _mode, _secret, _options), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def open_remote(_url, _mode, _secret, _options), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def get(_store, _session, _namespace, _keys), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def set(_store, _session, _changes), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def delete(_store, _session, _namespace, _key), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def list(_store, _session, _namespace), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def namespaces(_store, _session), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def rotate(_store), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def set_anchor(_store, _location), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def restore_epoch(_store), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def sessions(_store), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def drop_session(_store, _id), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def clear(_store, _session), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def sweep(_store), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def backup(_store, _dest), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def verify(_store), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def close(_store), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def tx_begin(_store, _session, _lock_key, _tag), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def tx_get(_tx, _namespace, _keys), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def tx_set(_tx, _changes), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def tx_commit(_tx), do: :erlang.nif_error(:sealkv_nif_not_loaded)
  def tx_abort(_tx), do: :erlang.nif_error(:sealkv_nif_not_loaded)
end
