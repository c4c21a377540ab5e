"""file_search: the model's queries go to the thread's and assistant's
vector stores (retrieval issue)."""
