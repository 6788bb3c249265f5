"""The roads a batch lands by, one module each, and what they share.

:class:`~chat_ingest.staging.StagingLoader` picks the road for a batch; each road can be read alone:

* :mod:`.digest` -- **identical**: the source's digest of the range equals staging's, nothing moves;
* :mod:`.straight` -- **straight**: a range staging holds nothing of is copied into the staging
  table and checked there in one scan;
* :mod:`.checked` -- **checked**: into a temp table of text, quarantine, merge by the spec's rule.

What they share: :mod:`.batch` (the range, the batch it lands as, the summary, the changed days),
:mod:`.copying` (COPY and the Arrow encoding) and :mod:`.checks` (what a row must pass, quarantine).
"""
