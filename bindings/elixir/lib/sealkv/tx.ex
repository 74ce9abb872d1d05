defmodule Sealkv.Tx do
  @moduledoc """
  A transaction in progress, handed to the function given to `Sealkv.transaction/3`.

  Read and write it with the same functions as a store (`Sealkv.get/3`,
  `Sealkv.get_many/3`, `Sealkv.put/5`, `Sealkv.delete/3`, `Sealkv.set/2`): reads see
  the transaction's own writes first; writes are buffered and committed together when
  the function returns. `Sealkv.rollback/2` ends it without writing.
  """

  @derive {Inspect, except: [:lock_key]}
  @enforce_keys [:ref, :store, :lock_key]
  defstruct [:ref, :store, :lock_key]

  @type t :: %__MODULE__{ref: reference(), store: Sealkv.t(), lock_key: String.t()}
end
