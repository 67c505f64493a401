"""`make bench`: each module here measures one pattern against its baseline, in the same run."""
