defmodule Sealkv.Error do
  @moduledoc """
  An error from sealkv: a stable `code` atom and a message. Messages never contain a
  key, a passphrase or a value.

  Codes: `:wrong_key`, `:key_kind` (a key given for a passphrase store or the reverse),
  `:locked` (another process holds the file exclusively), `:not_sealkv`,
  `:newer_format`, `:corrupt`, `:exists`, `:integrity` (a value failed
  authentication), `:too_large`, `:invalid_name`, `:invalid_ttl`, `:read_only`,
  `:poisoned`, `:commit_failed`, `:meta_tampered`, `:keyring_changed`,
  `:lock_timeout`, `:lock_lost`, `:needs_upgrade`, `:not_alone`, `:serde`,
  `:nested_lock`, `:rolled_back` (a joined transaction failed), `:key_in_use`, `:key`, `:io`, `:older_copy` (the store is an older copy
  than its anchor has seen: see `Sealkv.accept_restore/2`), `:anchor` (the anchor
  cannot be read or written), `:content_changed` (from `Sealkv.verify/1`: rows put back
  or removed outside sealkv), `:no_such_slot`, `:last_slot`, `:keychain`,
  `:server` (PostgreSQL), `:closed`, `:invalid_argument`, `:undecodable` (a stored
  term that does not decode, from `Sealkv.BaileysEx.Persistence`), `:internal` (a
  bug: the native code panicked). The engine's codes are its own (`Error::code` in
  Rust, the same names the Node package and the Tauri plugin spell `SEALKV_WRONG_KEY`
  and so on), except `:older_copy`.
  """

  defexception [:code, :message]

  @type t :: %__MODULE__{code: atom(), message: String.t()}

  @doc false
  def from({code, message}) when is_atom(code) and is_binary(message),
    do: %__MODULE__{code: code, message: message}

  @doc false
  def new(code, message), do: %__MODULE__{code: code, message: message}
end
