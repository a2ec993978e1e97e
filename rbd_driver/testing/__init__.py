"""Test helpers shipped to users: a fake librados/librbd and a real throwaway cluster."""
