"""Too many pipes (antipattern): tangled scripts and ad-hoc data access, beside a declared DAG."""
