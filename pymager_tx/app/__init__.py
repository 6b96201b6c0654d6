"""
The use cases, one module each, on the ports (a blob store, the metadata
database, peers, the removal signal) and never on an adapter or on HTTP.

Consistency rests on the order of steps, so that a crash between any two
leaves something start-up recovery can finish:

- upload (originals): claim the ID with a pending row, store the file, mark
  the row ready;
- delete (removals): mark the row deleting, remove the files, remove the row;
- derive (derivations, claims): claim the rendition, store the file under
  the claim's token, then record its row (and end the claim) only while the
  original (that very upload, by generation) is still ready;
- replace (replacements): claim the replacement (a claim naming the new
  file), store the file, then swap the row to the new generation only while
  it has the ETag the client named (the claim now names the old files),
  remove the old files, end the claim.

Readers see only ready originals, and a derived file belongs to one upload's
generation, so a re-upload under a deleted ID never meets an old file.
Several processes may share the database and storage: pending uploads and
claims name their owner, so recovery finishes only what dead processes left.
"""
