import kiln_docs_tests_no_such_module  # noqa: F401
