"""
Example processors for lhttp. With this folder on the Python path,
C{twistd lhttp} finds them as plugins (see C{twisted/plugins/} beside it).
"""
