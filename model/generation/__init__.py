"""Generation: the request's parameters (torch-free: the API checks them), the step loop's rules
(rows, endings, the quality gate) and the generator that samples and searches with them."""
